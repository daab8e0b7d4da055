"""OpenAPI 3.1 description of the management API, served at ``/api/openapi.json``."""

from __future__ import annotations

from ..domain.access_requests import ACCESS_MODES, STATUSES as REQUEST_STATUSES
from ..domain.approvals import STATUSES as APPROVAL_STATUSES
from ..domain.audit import EVENTS
from ..domain.people import SEARCH_LIMIT_MAX, SEARCH_MAX, SEARCH_MIN
from ..domain.permanent_consent import MODES as PERMANENT_MODES, STATUSES as PROPOSAL_STATUSES
from ..request_guard import MAX_QUERY_INT
from ..services.receipts import REASONS as RECEIPT_REASONS

_ERROR = {"$ref": "#/components/responses/Error"}


def _op(summary: str, role: str, *, ok: dict, params=(), body=None, errors=(401, 403, 404)):
    op = {
        "summary": summary,
        "description": f"Caller: {role}.",
        "security": [{"upstreamBearer": []}] if role != "anyone" else [],
        "parameters": [{"$ref": f"#/components/parameters/{p}"} for p in params],
        "responses": {**ok, **{str(code): _ERROR for code in errors}},
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _json(schema_ref: str, description: str = "OK") -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def openapi_document(issuer: str) -> dict:
    no_content = {"204": {"description": "Done"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "idp-bridge management API", "version": "1",
                 "description": "Advisor access to tenants: access codes, access "
                                "requests, memberships, permanent advisors, four eyes and "
                                "the audit log. Authorised by the caller's upstream (SSO) "
                                "access token."},
        "servers": [{"url": issuer.rstrip("/")}],
        "paths": {
            "/api/advisor-profile": {"get": _op("The fixed advisor profile", "anyone",
                                                ok={"200": _json("AdvisorProfile")}, errors=())},
            "/api/tenants/{tenant_id}": {
                "get": _op("Tenant and its settings", "tenant admin", ok={"200": _json("Tenant")},
                           params=["tenant"]),
                "patch": _op("Change the tenant's settings: the maximum age of temporary "
                             "access, the ways in (access_modes), four eyes. Shortening the "
                             "maximum, turning four eyes on and the ways in apply at once "
                             "(200); under four eyes, lengthening the maximum and turning four "
                             "eyes off are held for a second, different admin (202 with "
                             "pending_approvals; a second admin sending the same change, or "
                             "approving it under /approvals, applies it)", "tenant admin",
                             ok={"200": _json("TenantChange", "Applied"),
                                 "202": _json("TenantChange", "Held for a second admin")},
                             params=["tenant"],
                             body={"$ref": "#/components/schemas/TenantUpdate"},
                             errors=(400, 401, 403, 404, 409)),
            },
            "/api/tenants/{tenant_id}/access-requests": {"get": _op(
                "Pending access requests of advisors, oldest first, each with its first "
                "approval where four eyes awaits a second admin", "tenant admin",
                ok={"200": _json("AccessRequestList")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/access-requests/{request_id}/approve": {"post": _op(
                "Approve an access request, optionally for fewer hours than asked: 200 with "
                "the temporary membership it created (the advisor then exchanges without a "
                "code); under four eyes the first approval is held (202) and a second, "
                "different admin's approval completes it. Refused: own request 403 "
                "own_request, the same admin twice 403 same_approver, expired / denied / "
                "withdrawn / already approved 409 (request_expired, request_denied, "
                "request_withdrawn, request_already_approved), the advisor has access 409 "
                "already_member", "tenant admin",
                ok={"200": _json("AccessRequestDecision", "Approved"),
                    "202": _json("AccessRequestDecision", "Held for a second admin")},
                params=["tenant", "request_id"],
                body={"$ref": "#/components/schemas/AccessRequestApproval"},
                errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/access-requests/{request_id}/deny": {"post": _op(
                "Deny an access request with a note (required); a first approval of it "
                "awaiting a second admin is closed", "tenant admin",
                ok={"200": _json("AccessRequest", "Denied")}, params=["tenant", "request_id"],
                body={"$ref": "#/components/schemas/AccessRequestDenial"},
                errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/approvals": {"get": _op(
                "Four eyes: first approvals awaiting a second, different admin (approving "
                "access requests, lengthening the maximum age, turning four eyes off)",
                "tenant admin", ok={"200": _json("ApprovalList")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/approvals/{approval_id}/approve": {"post": _op(
                "Approve as the second admin: the decision takes effect with the first "
                "approval's terms (403 same_approver for the first approver; 409 "
                "approval_expired, approval_rejected, approval_closed, approval_completed)",
                "tenant admin", ok={"200": _json("ApprovalCompleted")},
                params=["tenant", "approval_id"], errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/approvals/{approval_id}/reject": {"post": _op(
                "Reject a pending approval (any admin; the first approver takes its own "
                "back): nothing of it takes effect", "tenant admin",
                ok={"200": _json("Approval", "Rejected")}, params=["tenant", "approval_id"],
                body={"$ref": "#/components/schemas/ApprovalRejection"},
                errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/access-code": {"get": _op(
                "The tenant's current access code", "tenant admin",
                ok={"200": _json("AccessCode")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/memberships": {"get": _op(
                "Advisors with access to the tenant", "tenant admin",
                ok={"200": _json("MembershipList")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/memberships/{membership_id}": {
                "get": _op("A membership of the tenant, also an ended one: when it ended and, "
                           "per receiver stream, when that resource server confirmed each of "
                           "its revocations (revocation receipts)", "tenant admin",
                           ok={"200": _json("MembershipDetail")},
                           params=["tenant", "membership_id"]),
                "delete": _op(
                    "Remove an advisor from the tenant (revokes every token of its grant)",
                    "tenant admin", ok=no_content, params=["tenant", "membership_id"],
                    errors=(401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/memberships/{membership_id}/evidence": {"get": {**_op(
                "The membership's evidence pack (docs/evidence-pack.md): how the access began "
                "and who agreed, the reason, every token issued or renewed, the requests the "
                "resource servers recorded, how and when it ended, the revocation receipts, "
                "the earlier downloads, and each of its audit events with its position in the "
                "tenant's hash chain and the digests linking it to a signed checkpoint. A "
                "compact JWS (ES256, typ evidence-pack+jwt, a key of /audit/jwks); with "
                "`Accept: application/json` `{jws, pack}`. Verify offline with `idp-bridge "
                "audit verify-evidence FILE --jwks …`. Each download is an audit event "
                "(evidence.downloaded). Refused: a malformed id 400 membership_id_malformed, "
                "another tenant's or an unknown membership 404 unknown_membership, an advisor "
                "asking for another's 403 evidence_forbidden",
                "tenant admin of the tenant, support admin, or the advisor of the membership "
                "(its own)", ok={"200": {
                    "description": "The signed pack",
                    "content": {"application/evidence-pack+jwt": {"schema": {
                        "type": "string", "description": "compact JWS"}},
                        "application/json": {"schema": {
                            "$ref": "#/components/schemas/EvidencePackAnswer"}}}}},
                params=["tenant", "membership_id"], errors=(400, 401, 403, 404))}},
            "/api/tenants/{tenant_id}/revocations": {"get": _op(
                "The tenant's latest revocations (ended grants, revoked token families), "
                "newest first, with their receipts", "tenant admin",
                ok={"200": _json("RevocationList")}, params=["tenant", "revocation_limit"],
                errors=(400, 401, 403, 404))},
            "/api/tenants/{tenant_id}/access": {"get": _op(
                "What advisors did at the resource servers, grouped per advisor (membership), "
                "area and action: count, first and last request, statuses; newest first",
                "tenant admin", ok={"200": _json("AccessGroups")},
                params=["tenant", "access_advisor", "access_area", "access_action",
                        "access_membership", "access_since", "access_until"],
                errors=(400, 401, 403, 404))},
            "/api/tenants/{tenant_id}/access/requests": {"get": _op(
                "The single requests advisors made at the resource servers, newest first",
                "tenant admin", ok={"200": _json("AccessRequests")},
                params=["tenant", "access_advisor", "access_area", "access_action",
                        "access_membership", "access_since", "access_until", "before",
                        "limit"], errors=(400, 401, 403, 404))},
            "/api/tenants/{tenant_id}/audit-events": {"get": _op(
                "The tenant's audit log, newest first", "tenant admin",
                ok={"200": _json("AuditEventPage")},
                params=["tenant", "before", "limit", "event"], errors=(400, 401, 403, 404))},
            "/api/tenants/{tenant_id}/audit/chain": {"get": _op(
                "The tenant's tamper-evident audit: its hash chain, oldest first, a page of "
                "events after position `after`, with the bridge's signed checkpoints "
                "(ES256 JWS, typ audit-checkpoint+jwt; keys at /audit/jwks). Verify offline "
                "with `idp-bridge audit verify` (docs/audit-chain.md)", "tenant admin",
                ok={"200": _json("AuditChainPage")},
                params=["tenant", "chain_after", "chain_limit"], errors=(400, 401, 403, 404))},
            "/api/tenants/{tenant_id}/permanent-advisors": {"get": _op(
                "Permanent advisors of the tenant", "support admin",
                ok={"200": _json("MembershipList")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/permanent-advisors/{advisor_subject}": {
                "put": {**_op("Assign a permanent advisor: an enabled person of the directory "
                              "with the advisor role (unknown 404 person_unknown, disabled 409 "
                              "person_disabled, no advisor role 400 person_not_advisor); the "
                              "name comes from the directory", "support admin",
                              ok={"200": _json("Membership", "Already assigned"),
                                  "201": _json("Membership", "Assigned")},
                              params=["tenant", "advisor_subject"],
                              errors=(400, 401, 403, 404, 409, 503)),
                        "requestBody": {"required": False, "content": {"application/json": {
                            "schema": {"type": "object", "additionalProperties": False}}}}},
                "delete": _op("Remove a permanent advisor", "support admin", ok=no_content,
                              params=["tenant", "advisor_subject"]),
            },
            "/api/tenants/{tenant_id}/permanent-proposals": {
                "get": _op("Pending proposals of permanent advisors, oldest first, each with "
                           "its first acceptance where four eyes awaits a second admin",
                           "tenant admin or support admin",
                           ok={"200": _json("PermanentProposalList")}, params=["tenant"]),
                "post": _op("Propose a permanent advisor (an enabled person of the directory "
                            "with the advisor role; unknown 404 person_unknown, disabled 409 "
                            "person_disabled, no advisor role 400 person_not_advisor): nothing "
                            "is live until a tenant admin accepts. Refused: already permanent "
                            "409 already_permanent, a proposal pending 409 proposal_pending, "
                            "a guest 409 advisor_is_guest", "support admin",
                            ok={"201": _json("PermanentProposal", "Proposed")},
                            params=["tenant"],
                            body={"$ref": "#/components/schemas/PermanentProposalCreate"},
                            errors=(400, 401, 403, 404, 409, 503))},
            "/api/tenants/{tenant_id}/permanent-proposals/{proposal_id}": {"delete": _op(
                "Withdraw a pending proposal (a first acceptance of it is closed)",
                "support admin", ok={"200": _json("PermanentProposal", "Withdrawn")},
                params=["tenant", "proposal_id"], errors=(401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/permanent-proposals/{proposal_id}/accept": {"post": _op(
                "Accept a proposed permanent advisor: 200 with the permanent membership (a "
                "temporary access of the advisor is superseded); under four eyes the first "
                "acceptance is held (202) and a second, different admin's acceptance (here or "
                "under /approvals) completes it. Refused: the advisor themselves 403 "
                "own_permanent_access, the same admin twice 403 same_approver, answered or "
                "withdrawn 409 proposal_closed", "tenant admin",
                ok={"200": _json("PermanentAcceptance", "Accepted"),
                    "202": _json("PermanentAcceptance", "Held for a second admin")},
                params=["tenant", "proposal_id"], errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/permanent-proposals/{proposal_id}/decline": {"post": _op(
                "Decline a proposed permanent advisor with a note (required); a first "
                "acceptance of it is closed", "tenant admin",
                ok={"200": _json("PermanentProposal", "Declined")},
                params=["tenant", "proposal_id"],
                body={"$ref": "#/components/schemas/AccessRequestDenial"},
                errors=(400, 401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/permanent-confirmations": {"get": _op(
                "The tenant's permanent advisors with their last confirmation, the date their "
                "re-confirmation is due and the date they lapse unconfirmed", "tenant admin",
                ok={"200": _json("MembershipList")}, params=["tenant"])},
            "/api/tenants/{tenant_id}/memberships/{membership_id}/reconfirm": {"post": _op(
                "Re-confirm a permanent advisor: the next re-confirmation is due a full period "
                "from now. Refused: not permanent 409 not_permanent, ended 409 "
                "membership_ended, the advisor themselves 403 own_permanent_access",
                "tenant admin", ok={"200": _json("Membership", "Re-confirmed")},
                params=["tenant", "membership_id"], errors=(400, 401, 403, 404, 409))},
            "/api/permanent-proposals": {"get": _op(
                "Every pending proposal of a permanent advisor (tenant filters)",
                "support admin", ok={"200": _json("PermanentProposalList")},
                params=["tenant_filter"], errors=(401, 403))},
            "/api/directory/advisors": {"get": _op(
                "Advisors of the directory whose name, username or e-mail matches q",
                "support admin", ok={"200": _json("PeopleFound")}, params=["q", "search_limit"],
                errors=(400, 401, 403, 503))},
            "/api/tenants/{tenant_id}/directory/advisors": {"get": _op(
                "Advisors of the directory matching q, to invite one as a guest",
                "tenant admin", ok={"200": _json("PeopleFound")},
                params=["tenant", "q", "search_limit"], errors=(400, 401, 403, 404, 503))},
            "/api/me/memberships": {"get": _op("My tenants", "advisor",
                                               ok={"200": _json("MembershipList")}, errors=(401, 403))},
            "/api/me/memberships/{tenant_id}": {"delete": _op(
                "Leave a tenant", "advisor", ok=no_content, params=["tenant"])},
            "/api/me/access-requests": {
                "get": _op("My access requests: the pending ones and those answered in the "
                           "last 14 days, newest first", "advisor",
                           ok={"200": _json("AccessRequestList")}, errors=(401, 403)),
                "post": _op("Ask a tenant for temporary access with a reason or ticket and a "
                            "duration up to the tenant's maximum; its admins are notified. "
                            "Refused: the tenant allows codes only 403 requests_not_allowed, "
                            "no reason 400 text_required, a bad duration 400 "
                            "duration_out_of_range, a pending request for the tenant 409 "
                            "request_pending, live access 409 already_member", "advisor",
                            ok={"201": _json("AccessRequest", "Requested")},
                            body={"$ref": "#/components/schemas/AccessRequestCreate"},
                            errors=(400, 401, 403, 404, 409))},
            "/api/me/access-requests/{request_id}": {"delete": _op(
                "Withdraw a pending access request of mine", "advisor",
                ok={"200": _json("AccessRequest", "Withdrawn")}, params=["request_id"],
                errors=(401, 403, 404, 409))},
            "/api/tenants/{tenant_id}/groups": {
                "get": _op("The tenant's user groups", "tenant admin",
                           ok={"200": _json("GroupList")}, params=["tenant"]),
                "post": _op("Create a user group", "tenant admin",
                            ok={"201": _json("Group", "Created")}, params=["tenant"],
                            body={"$ref": "#/components/schemas/GroupChange"},
                            errors=(400, 401, 403, 404, 409)),
            },
            "/api/tenants/{tenant_id}/groups/{group_id}": {
                "patch": _op("Rename a user group or set its permissions (narrowing revokes "
                             "wider tokens of its guests at once)", "tenant admin",
                             ok={"200": _json("Group")}, params=["tenant", "group_id"],
                             body={"$ref": "#/components/schemas/GroupChange"},
                             errors=(400, 401, 403, 404, 409)),
                "delete": _op("Delete a user group no guest uses", "tenant admin",
                              ok=no_content, params=["tenant", "group_id"],
                              errors=(401, 403, 404, 409)),
            },
            "/api/tenants/{tenant_id}/invitations": {
                "get": _op("Open guest invitations", "tenant admin",
                           ok={"200": _json("InvitationList")}, params=["tenant"]),
                "post": _op("Invite an advisor as a guest with a user group", "tenant admin",
                            ok={"201": _json("Invitation", "Invited")}, params=["tenant"],
                            body={"$ref": "#/components/schemas/InvitationRequest"},
                            errors=(400, 401, 403, 404)),
            },
            "/api/tenants/{tenant_id}/invitations/{invitation_id}": {"delete": _op(
                "Withdraw an invitation", "tenant admin", ok=no_content,
                params=["tenant", "invitation_id"], errors=(401, 403, 404, 409))},
            "/api/me/invitations": {"get": _op("Invitations addressed to me", "advisor",
                                               ok={"200": _json("InvitationList")},
                                               errors=(401, 403))},
            "/api/me/invitations/{invitation_id}/accept": {"post": _op(
                "Accept an invitation: become a guest of the tenant", "advisor",
                ok={"201": _json("Membership", "Joined as guest")}, params=["invitation_id"],
                errors=(401, 403, 404, 409))},
        },
        "components": {
            "securitySchemes": {"upstreamBearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token of the upstream identity provider."}},
            "parameters": {
                "tenant": {"name": "tenant_id", "in": "path", "required": True, "schema": {"type": "string"}},
                "membership_id": {"name": "membership_id", "in": "path", "required": True,
                                  "schema": {"type": "string", "format": "uuid"}},
                "group_id": {"name": "group_id", "in": "path", "required": True,
                             "schema": {"type": "string", "format": "uuid"}},
                "invitation_id": {"name": "invitation_id", "in": "path", "required": True,
                                  "schema": {"type": "string", "format": "uuid"}},
                "advisor_subject": {"name": "advisor_subject", "in": "path", "required": True,
                                    "schema": {"type": "string"}},
                "request_id": {"name": "request_id", "in": "path", "required": True,
                               "schema": {"type": "string", "format": "uuid"}},
                "proposal_id": {"name": "proposal_id", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                "tenant_filter": {"name": "tenant", "in": "query", "required": False,
                                  "schema": {"type": "string"}},
                "approval_id": {"name": "approval_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}},
                "before": {"name": "before", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": MAX_QUERY_INT}},
                "limit": {"name": "limit", "in": "query",
                          "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                "event": {"name": "event", "in": "query", "schema": {"enum": list(EVENTS)}},
                "chain_after": {"name": "after", "in": "query", "description":
                                "The position after which the page starts (0: the start)",
                                "schema": {"type": "integer", "minimum": 0,
                                           "maximum": MAX_QUERY_INT, "default": 0}},
                "chain_limit": {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": 5000, "default": 1000}},
                "access_advisor": {"name": "advisor", "in": "query", "schema": {"type": "string"},
                                   "description": "name, username, e-mail or subject"},
                "access_area": {"name": "area", "in": "query", "schema": {"type": "string"}},
                "access_action": {"name": "action", "in": "query",
                                  "schema": {"enum": ["read", "write"]}},
                "access_membership": {"name": "membership", "in": "query",
                                      "schema": {"type": "string", "format": "uuid"}},
                "access_since": {"name": "since", "in": "query", "schema": {"type": "string"},
                                 "description": "a date (YYYY-MM-DD) or an RFC 3339 time"},
                "access_until": {"name": "until", "in": "query", "schema": {"type": "string"},
                                 "description": "a date (YYYY-MM-DD) or an RFC 3339 time"},
                "q": {"name": "q", "in": "query", "required": True,
                      "schema": {"type": "string", "minLength": SEARCH_MIN, "maxLength": SEARCH_MAX}},
                "search_limit": {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": SEARCH_LIMIT_MAX, "default": 10}},
                "revocation_limit": {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
            },
            "responses": {"Error": {"description": "Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "PeopleFound": {"type": "object", "required": ["source", "people"], "properties": {
                    "source": {"enum": ["keycloak", "sign_ins"], "description":
                               "keycloak: everyone of the realm; sign_ins: people who signed "
                               "in here before (no directory of the identity provider)"},
                    "people": {"type": "array", "items": {"$ref": "#/components/schemas/Person"}}}},
                "Person": {"type": "object", "required": ["subject"], "properties": {
                    "subject": {"type": "string"}, "name": {"type": ["string", "null"]},
                    "username": {"type": ["string", "null"]},
                    "email": {"type": ["string", "null"]}}},
                "Error": {"type": "object", "required": ["error", "error_description"],
                          "properties": {
                              "error": {"type": "string"},
                              "error_description": {"type": "string"},
                              "error_code": {
                                  "type": "string", "pattern": "^[a-z][a-z_]*$",
                                  "description": "The refusal's stable machine code "
                                                 "(e.g. unknown_tenant, not_tenant_admin, "
                                                 "group_in_use); present on every refusal of "
                                                 "a use case; absent when the bearer token "
                                                 "is refused (401) or cannot be checked "
                                                 "(503)."}}},
                "AccessCode": {"type": "object", "required": ["code", "tenant", "expires_at"],
                               "properties": {"code": {"type": "string",
                                                       "pattern": "^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$"},
                                              "tenant": {"type": "string"},
                                              "expires_at": {"type": "string", "format": "date-time"}}},
                "Membership": {"type": "object", "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "advisor": {"type": "string"}, "advisor_name": {"type": ["string", "null"]},
                    "kind": {"enum": ["temporary", "permanent", "guest"]},
                    "since": {"type": "string", "format": "date-time"},
                    "reason": {"type": ["string", "null"]},
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_token_issued_at": {"type": ["string", "null"], "format": "date-time"},
                    "created_by": {"type": "string"},
                    "group": {"type": ["string", "null"]},
                    "confirmed_at": {"type": ["string", "null"], "format": "date-time",
                                     "description": "permanent only: the last confirmation "
                                                    "(assignment, acceptance, re-confirmation)"},
                    "reconfirm_due_at": {"type": ["string", "null"], "format": "date-time",
                                         "description": "permanent only: a tenant admin must "
                                                        "re-confirm by then"},
                    "lapses_at": {"type": ["string", "null"], "format": "date-time",
                                  "description": "permanent only: unconfirmed, the access "
                                                 "ends then (after the grace period)"}}},
                "MembershipDetail": {"allOf": [{"$ref": "#/components/schemas/Membership"}, {
                    "type": "object",
                    "required": ["ended_at", "ended_by", "end_reason", "revocation_receipts"],
                    "properties": {
                        "ended_at": {"type": ["string", "null"], "format": "date-time"},
                        "ended_by": {"type": ["string", "null"]},
                        "end_reason": {"type": ["string", "null"]},
                        "revocation_receipts": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Revocation"}}}}]},
                "Revocation": {"type": "object", "required": [
                    "id", "kind", "reason", "revoked_at", "due", "confirmed", "receipts"],
                    "description": "A revoked grant or token family. due: the receiver streams "
                                   "that existed when it was revoked; confirmed: those that "
                                   "acknowledged its event; within_ms: the slowest of them.",
                    "properties": {
                        "id": {"type": "integer"}, "kind": {"enum": ["grant", "family"]},
                        "grant_id": {"type": "string"}, "sid": {"type": "string"},
                        "reason": {"type": "string"},
                        "revoked_at": {"type": "string", "format": "date-time"},
                        "membership_id": {"type": ["string", "null"]},
                        "advisor": {"type": ["string", "null"]},
                        "due": {"type": "integer"}, "confirmed": {"type": "integer"},
                        "within_ms": {"type": ["integer", "null"]},
                        "receipts": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Receipt"}}}},
                "Receipt": {"type": "object", "required": [
                    "stream_id", "client_id", "delivery", "confirmed", "reason"], "properties": {
                    "stream_id": {"type": "string"}, "client_id": {"type": "string"},
                    "client_name": {"type": ["string", "null"]},
                    "delivery": {"enum": ["poll", "push"]},
                    "description": {"type": ["string", "null"]},
                    "status": {"enum": ["enabled", "paused", "disabled", "deleted"],
                               "description": "The stream now (deleted: deleted or idle)"},
                    "confirmed": {"type": "boolean"},
                    "acknowledged_at": {"type": ["string", "null"], "format": "date-time",
                                        "description": "poll: acknowledged; push: accepted"},
                    "latency_ms": {"type": ["integer", "null"]},
                    "reason": {"enum": [None, *RECEIPT_REASONS],
                               "description": "Why not confirmed (null when confirmed)"},
                    "last_seen_at": {"type": ["string", "null"], "format": "date-time",
                                     "description": "null once the stream is deleted"}}},
                "AccessGroups": {"type": "object", "required": ["groups"], "properties": {
                    "groups": {"type": "array", "items": {"type": "object", "properties": {
                        "advisor": {"type": "string"}, "advisor_name": {"type": ["string", "null"]},
                        "membership_id": {"type": "string"}, "area": {"type": "string"},
                        "action": {"enum": ["read", "write"]}, "count": {"type": "integer"},
                        "first_at": {"type": "string", "format": "date-time"},
                        "last_at": {"type": "string", "format": "date-time"},
                        "statuses": {"type": "object",
                                     "additionalProperties": {"type": "integer"}}}}}}},
                "AccessRequests": {"type": "object", "required": ["requests"], "properties": {
                    "requests": {"type": "array", "items": {"type": "object"}},
                    "next_before": {"type": ["integer", "null"]}}},
                "RevocationList": {"type": "object", "properties": {"revocations": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Revocation"}}}},
                "MembershipList": {"type": "object", "properties": {"memberships": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Membership"}}}},
                "Group": {"type": "object", "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "name": {"type": "string"},
                    "permissions": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "token_families_narrowed": {"type": "integer"}}},
                "GroupList": {"type": "object", "properties": {"groups": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Group"}}}},
                "GroupChange": {"type": "object", "additionalProperties": False, "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "permissions": {"type": "array", "items": {
                        "type": "string", "pattern": "^[a-z-]+:(read|write)$"}}}},
                "Invitation": {"type": "object", "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "group": {"type": "string"}, "invitee_subject": {"type": ["string", "null"]},
                    "invitee_name": {"type": ["string", "null"]},
                    "invitee_email": {"type": ["string", "null"]},
                    "created_by": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"}}},
                "InvitationList": {"type": "object", "properties": {"invitations": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Invitation"}}}},
                "InvitationRequest": {"type": "object", "additionalProperties": False,
                                      "required": ["group"], "properties": {
                                          "group": {"type": "string"},
                                          "subject": {"type": "string"},
                                          "email": {"type": "string", "format": "email"}}},
                "Tenant": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "temporary_max_age_days": {"type": "integer"},
                    "temporary_max_age_days_limit": {"type": "integer"},
                    "access_modes": {"enum": list(ACCESS_MODES), "description":
                                     "the ways in: access codes, access requests, or both"},
                    "four_eyes": {"type": "boolean", "description":
                                  "approving access requests, lengthening the maximum age "
                                  "and turning four eyes off need a second, different "
                                  "admin"},
                    "permanent_mode": {"enum": list(PERMANENT_MODES), "description":
                                       "direct: support assigns permanent advisors; accept: "
                                       "support proposes, a tenant admin accepts (back to "
                                       "direct needs four eyes)"}}},
                "TenantChange": {"allOf": [{"$ref": "#/components/schemas/Tenant"}, {
                    "type": "object", "properties": {
                        "memberships_expired": {"type": "integer"},
                        "pending_approvals": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Approval"}}}}]},
                "TenantUpdate": {"type": "object", "additionalProperties": False,
                                 "minProperties": 1, "properties": {
                                     "temporary_max_age_days": {"type": "integer", "minimum": 1},
                                     "access_modes": {"enum": list(ACCESS_MODES)},
                                     "four_eyes": {"type": "boolean"},
                                     "permanent_mode": {"enum": list(PERMANENT_MODES)}}},
                "AccessRequestCreate": {"type": "object", "additionalProperties": False,
                                        "required": ["tenant", "reason", "duration_hours"],
                                        "properties": {
                                            "tenant": {"type": "string"},
                                            "reason": {"type": "string", "minLength": 1},
                                            "duration_hours": {"type": "integer",
                                                               "minimum": 1}}},
                "AccessRequestApproval": {"type": "object", "additionalProperties": False,
                                          "properties": {
                                              "duration_hours": {"type": "integer", "minimum": 1,
                                                                 "description": "at most the "
                                                                 "hours asked for"},
                                              "note": {"type": "string"}}},
                "AccessRequestDenial": {"type": "object", "additionalProperties": False,
                                        "required": ["note"],
                                        "properties": {"note": {"type": "string",
                                                                "minLength": 1}}},
                "PermanentProposalCreate": {"type": "object", "additionalProperties": False,
                                            "required": ["advisor"], "properties": {
                                                "advisor": {"type": "string",
                                                            "description": "the subject"},
                                                "reason": {"type": "string"}}},
                "PermanentProposal": {"type": "object", "required": [
                    "id", "tenant", "advisor", "status", "proposed_by", "proposed_at"],
                    "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "tenant_name": {"type": ["string", "null"]},
                    "advisor": {"type": "string"}, "advisor_name": {"type": ["string", "null"]},
                    "reason": {"type": ["string", "null"]},
                    "status": {"enum": list(PROPOSAL_STATUSES)},
                    "proposed_by": {"type": "string"},
                    "proposed_by_name": {"type": ["string", "null"]},
                    "proposed_at": {"type": "string", "format": "date-time"},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "decided_by": {"type": ["string", "null"]},
                    "decided_by_name": {"type": ["string", "null"]},
                    "accepted_by": {"type": "array", "items": {"type": "string"}},
                    "note": {"type": ["string", "null"]},
                    "membership_id": {"type": ["string", "null"]},
                    "expires_at": {"type": ["string", "null"], "format": "date-time",
                                   "description": "a pending proposal unanswered until then "
                                                  "expires (null once answered)"},
                    "first_approval": {"oneOf": [{"type": "null"},
                                                 {"$ref": "#/components/schemas/Approval"}]}}},
                "PermanentProposalList": {"type": "object", "properties": {"proposals": {
                    "type": "array", "items": {"$ref": "#/components/schemas/PermanentProposal"}}}},
                "PermanentAcceptance": {"type": "object", "properties": {
                    "proposal": {"$ref": "#/components/schemas/PermanentProposal"},
                    "membership": {"oneOf": [{"type": "null"},
                                             {"$ref": "#/components/schemas/Membership"}]},
                    "pending_approval": {"oneOf": [{"type": "null"},
                                                   {"$ref": "#/components/schemas/Approval"}]}}},
                "ApprovalRejection": {"type": "object", "additionalProperties": False,
                                      "properties": {"note": {"type": "string"}}},
                "AccessRequest": {"type": "object", "required": [
                    "id", "tenant", "advisor", "reason", "duration_hours", "status",
                    "created_at", "expires_at"], "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "tenant_name": {"type": ["string", "null"]},
                    "advisor": {"type": "string"}, "advisor_name": {"type": ["string", "null"]},
                    "reason": {"type": "string"}, "duration_hours": {"type": "integer"},
                    "status": {"enum": list(REQUEST_STATUSES)},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time",
                                   "description": "unanswered until then, it expires"},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "decided_by": {"type": ["string", "null"]},
                    "decided_by_name": {"type": ["string", "null"]},
                    "approved_by": {"type": "array", "items": {"type": "string"}},
                    "approved_by_names": {"type": "array", "items": {"type": "string"}},
                    "approved_hours": {"type": ["integer", "null"]},
                    "note": {"type": ["string", "null"]},
                    "membership_id": {"type": ["string", "null"]},
                    "access_expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "first_approval": {"oneOf": [{"type": "null"},
                                                 {"$ref": "#/components/schemas/Approval"}]}}},
                "AccessRequestList": {"type": "object", "properties": {"access_requests": {
                    "type": "array", "items": {"$ref": "#/components/schemas/AccessRequest"}}}},
                "AccessRequestDecision": {"type": "object", "properties": {
                    "access_request": {"$ref": "#/components/schemas/AccessRequest"},
                    "membership": {"oneOf": [{"type": "null"},
                                             {"$ref": "#/components/schemas/Membership"}]},
                    "pending_approval": {"oneOf": [{"type": "null"},
                                                   {"$ref": "#/components/schemas/Approval"}]}}},
                "Approval": {"type": "object", "required": [
                    "id", "tenant", "action", "target", "terms", "status", "first_approver",
                    "first_approved_at", "expires_at"], "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"},
                    "action": {"type": "string", "examples": [
                        "access_request.approve", "tenant.max_age", "tenant.four_eyes_off",
                        "permanent_advisor.accept", "tenant.permanent_direct"]},
                    "target": {"type": "string"}, "terms": {"type": "object"},
                    "status": {"enum": list(APPROVAL_STATUSES)},
                    "first_approver": {"type": "string"},
                    "first_approver_name": {"type": ["string", "null"]},
                    "first_approved_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "decided_by": {"type": ["string", "null"]},
                    "decided_by_name": {"type": ["string", "null"]},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "note": {"type": ["string", "null"]}}},
                "ApprovalList": {"type": "object", "properties": {"approvals": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Approval"}}}},
                "ApprovalCompleted": {"type": "object", "properties": {
                    "approval": {"$ref": "#/components/schemas/Approval"},
                    "tenant": {"$ref": "#/components/schemas/Tenant"}}},
                "AuditEventPage": {"type": "object", "properties": {
                    "events": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                        "event": {"enum": list(EVENTS)}, "actor": {"type": ["string", "null"]},
                        "actor_role": {"type": ["string", "null"]},
                        "membership_id": {"type": ["string", "null"]},
                        "client_id": {"type": ["string", "null"]}, "detail": {"type": "object"}}}},
                    "next_before": {"type": ["integer", "null"]}}},
                "EvidencePackAnswer": {"type": "object", "required": ["jws", "pack"],
                                       "properties": {
                    "jws": {"type": "string", "description": "the signed pack (compact JWS)"},
                    "pack": {"type": "object", "description": "its payload",
                             "required": ["format", "iss", "iat", "jti", "tenant",
                                          "membership", "began", "tokens", "access_records",
                                          "revocations", "downloads", "events", "chain"],
                             "properties": {"format": {"const": "idp-bridge-evidence/1"}}}}},
                "AuditChainPage": {"type": "object", "required": [
                    "format", "chain", "head", "after", "next_after", "events", "checkpoints"],
                    "properties": {
                    "format": {"const": "idp-bridge-audit-chain/1"},
                    "issuer": {"type": "string"}, "chain": {"type": "string"},
                    "tenant": {"type": "string"},
                    "exported_at": {"type": "string", "format": "date-time"},
                    "head": {"type": "object", "properties": {
                        "seq": {"type": "integer"}, "hash": {"$ref": "#/components/schemas/Sha256"}}},
                    "after": {"type": "integer"}, "next_after": {"type": ["integer", "null"]},
                    "jwks_uri": {"type": "string", "format": "uri"},
                    "events": {"type": "array", "items": {"type": "object", "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "prev": {"oneOf": [{"$ref": "#/components/schemas/Sha256"},
                                           {"type": "null"}]},
                        "hash": {"$ref": "#/components/schemas/Sha256"},
                        "at": {"type": "string", "format": "date-time"},
                        "event": {"enum": list(EVENTS)}, "tenant": {"type": ["string", "null"]},
                        "actor": {"type": ["string", "null"]},
                        "actor_role": {"type": ["string", "null"]},
                        "membership_id": {"type": ["string", "null"]},
                        "client_id": {"type": ["string", "null"]},
                        "detail": {"type": ["object", "null"]}, "id": {"type": "integer"}}}},
                    "checkpoints": {"type": "array", "items": {"type": "object", "properties": {
                        "seq": {"type": "integer"}, "hash": {"$ref": "#/components/schemas/Sha256"},
                        "signed_at": {"type": "string", "format": "date-time"},
                        "kid": {"type": "string"}, "jws": {"type": "string"}}}}}},
                "Sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "AdvisorProfile": {"type": "object", "properties": {
                    "scopes": {"type": "array", "items": {"type": "string"}},
                    "areas": {"type": "array", "items": {"type": "object"}},
                    "mutable": {"const": False}}},
            },
        },
    }
