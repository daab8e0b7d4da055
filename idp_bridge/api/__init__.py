"""Management API under ``/api/`` (DESIGN.md section 6), authorised by the caller's upstream
access token. A caller acting outside its rights gets 403 and nothing changes."""

from .views import bp

__all__ = ["bp"]
