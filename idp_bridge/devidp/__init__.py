"""Development OpenID provider (demo/test mode only); see :mod:`.provider`."""
from .provider import DEMO_USERS, DevProvider, DevProviderRefused

__all__ = ["DEMO_USERS", "DevProvider", "DevProviderRefused"]
