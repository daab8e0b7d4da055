"""Management API under ``/api/`` (DESIGN.md section 6), authorised by the caller's upstream
access token. A caller acting outside its rights gets 403 and nothing changes.

One blueprint (``api``, a machine blueprint: no cookies, no CSRF, JSON errors), its routes
split by role as the pages are: :mod:`.tenant_admin`, :mod:`.advisor`, :mod:`.support`,
:mod:`.groups` (user groups and invitations), :mod:`.audit_chain` (the tenant's audit hash
chain), :mod:`.evidence` (a membership's evidence pack); :mod:`.documents` serves the
OpenAPI document and the fixed advisor profile; :mod:`.common` authenticates the caller and
maps refusals to JSON. Each route parses the request, calls one application service
(:mod:`idp_bridge.services`) and renders its result.
"""

from . import advisor, audit_chain, documents, evidence, groups, support, tenant_admin  # noqa: F401
from .common import bp

__all__ = ["bp"]
