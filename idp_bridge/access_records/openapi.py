"""OpenAPI 3.1 description of the access-record ingest (``POST /access-records``), served at
``/access-records/openapi.json``. A document of its own: the management API's callers are
people (upstream bearer tokens), this endpoint's are resource servers (receiver clients)."""

from __future__ import annotations

from scopes.catalog import ACTIONS, CATALOG

from ..domain.access_records import MAX_BATCH, MAX_BATCH_BYTES, METHODS, REFUSALS
from ..ssf.authorization import ACCESS_RECORD

_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._~:@+=-]+$"}


def openapi_document(issuer: str) -> dict:
    issuer = issuer.rstrip("/")
    error = {"description": "Error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "idp-bridge access records", "version": "1",
                 "description": "Resource servers (scopes.guard) report the requests they "
                                "authorised with advisor and guest tokens, so that the tenant "
                                "sees what each advisor read. Delivery is at least once: the "
                                "record id is the idempotency key per receiver client."},
        "servers": [{"url": issuer}],
        "paths": {"/access-records": {"post": {
            "summary": "Report a batch of access records",
            "description": (
                f"Caller: a client with the role receiver (HTTP Basic client_id:client_secret, "
                f"or a client credentials access token with the scope {ACCESS_RECORD}). Each "
                "record is answered on its own: accepted (stored now), a duplicate (stored "
                "before) or refused with its error (never stored, audited as "
                "access_record.refused in the claimed tenant). A record is refused unless its "
                "grant_id is the grant of a membership of the tenant (in any state), sub is "
                "that membership's advisor and sid, if given, a token family of that grant. "
                "The shipper drops refused records. A malformed batch is 400 and stores "
                f"nothing. At most {MAX_BATCH} records in a body of at most "
                f"{MAX_BATCH_BYTES} bytes (this endpoint's own limit; a larger body is 413 "
                "and stores nothing: a sender then sends smaller batches). A batch is "
                "stored in transactions of a few hundred records: should the request fail "
                "midway, some records may be stored already and are answered as duplicates "
                "when the batch is sent again."),
            "security": [{"receiverBasic": []}, {"receiverToken": [ACCESS_RECORD]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Batch"}}}},
            "responses": {
                "200": {"description": "Every record answered", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}},
                "400": error, "401": error, "403": error, "413": error},
        }}},
        "components": {
            "securitySchemes": {
                "receiverBasic": {"type": "http", "scheme": "basic"},
                "receiverToken": {"type": "oauth2", "flows": {"clientCredentials": {
                    "tokenUrl": f"{issuer}/token",
                    "scopes": {ACCESS_RECORD: "report access records"}}}},
            },
            "schemas": {
                "Batch": {"type": "object", "required": ["records"], "properties": {
                    "records": {"type": "array", "maxItems": MAX_BATCH,
                                "items": {"$ref": "#/components/schemas/Record"}}}},
                "Record": {"type": "object",
                           "required": ["id", "tenant", "grant_id", "sub", "area", "action",
                                        "method", "route", "status", "at"],
                           "properties": {
                               "id": {**_ID, "description": "made by the resource server "
                                      "(a UUID 4): the idempotency key per receiver client"},
                               "tenant": _ID, "grant_id": _ID,
                               "sid": {"oneOf": [_ID, {"type": "null"}]},
                               "sub": {"type": "string", "minLength": 1, "maxLength": 255},
                               "area": {"enum": sorted(CATALOG)},
                               "action": {"enum": list(ACTIONS)},
                               "method": {"enum": sorted(METHODS)},
                               "route": {"type": "string", "maxLength": 200, "pattern": "^/",
                                         "description": "the route template (e.g. "
                                         "/tenants/<tenant>/ebics), never a raw path, query "
                                         "or body"},
                               "status": {"type": "integer", "minimum": 100, "maximum": 599},
                               "at": {"type": "string", "format": "date-time",
                                      "description": "RFC 3339 in UTC (Z), at most 5 minutes "
                                      "ahead of the bridge's clock",
                                      "examples": ["2026-12-02T10:42:01.123Z"]}}},
                "Answer": {"type": "object", "required": ["accepted", "duplicates", "refused"],
                           "properties": {
                               "accepted": {"type": "array", "items": {"type": "string"}},
                               "duplicates": {"type": "array", "items": {"type": "string"}},
                               "refused": {"type": "array", "items": {
                                   "type": "object", "required": ["id", "error"],
                                   "properties": {
                                       "id": {"type": ["string", "null"], "description":
                                              "null where the record had no valid id"},
                                       "error": {"enum": list(REFUSALS)}}}}}},
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "error_description": {"type": "string"}}},
            },
        },
    }
