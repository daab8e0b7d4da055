"""The access log's download of the tenant's audit hash chain (issue 15 item 4;
docs/audit-chain.md): the whole chain with the bridge's signed checkpoints as JSON (the
export the verifier reads) or as CSV (the events; spreadsheet-safe and still verifiable),
streamed a page at a time so that a long chain never sits in memory. Tenant admins only,
like the rest of the access log (routes of the ``tenant`` blueprint)."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timezone

from flask import Response, g, stream_with_context

from ..services.audit_chain import CSV_COLUMNS, DEFAULT_PAGE, csv_cells
from ..storage.db import utcnow
from .i18n import current_language
from .pages import tenant_admin_required, use_cases
from .tenant import bp


#: Events read per query while a download streams.
PAGE = DEFAULT_PAGE


def _chains():
    return use_cases().audit_chains


@bp.get("/log/chain.json")
@tenant_admin_required
def audit_chain_json(tenant_id):
    chains = _chains()
    pages = chains.pages(g.identity, tenant_id, limit=PAGE)
    first = next(pages)  # refusals (unknown tenant) answer before the download starts
    body = chains.document_text(first, pages)
    return _download(stream_with_context(body), "application/json", tenant_id, "json")


@bp.get("/log/chain.csv")
@tenant_admin_required
def audit_chain_csv(tenant_id):
    pages = _chains().pages(g.identity, tenant_id, limit=PAGE)
    first = next(pages)
    delimiter = ";" if current_language() == "de" else ","

    def body():
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        out.write("\ufeff")
        writer.writerow(CSV_COLUMNS)
        for page in itertools.chain((first,), pages):
            for event in page.events:
                writer.writerow(csv_cells(event))
            yield out.getvalue()
            out.seek(0)
            out.truncate()

    return _download(stream_with_context(body()), "text/csv", tenant_id, "csv")


def _download(body, mimetype: str, tenant_id: str, suffix: str) -> Response:
    stamp = utcnow().astimezone(timezone.utc).strftime("%Y%m%d-%H%M")
    name = f"audit-chain-{tenant_id}-{stamp}.{suffix}"
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
