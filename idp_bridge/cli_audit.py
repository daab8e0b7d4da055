"""``idp-bridge audit``: verify an exported audit chain or an evidence pack offline, sign the
due checkpoints now, make a new checkpoint key (docs/audit-chain.md,
docs/evidence-pack.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

#: Largest export ``verify`` reads (a chain of millions of events is a few GB of JSON: split
#: it with the API's pages instead).
MAX_FILE_BYTES = 2 * 1024 ** 3


@click.group()
def audit():
    """The tenants' tamper-evident audit chains."""


@audit.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--jwks", "jwks_source", default=None,
              help="The checkpoint keys: a saved copy of <bridge>/audit/jwks, or that URL. "
                   "Default: the keys in the file itself (with a note).")
@click.option("--compare", "others", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Another export of the same chain (an earlier download; the JSON beside a "
                   "CSV): its checkpoints are verified against this chain and its events must "
                   "be this chain's. Repeatable.")
def audit_verify(file, jwks_source, others):
    """Check an exported audit chain (JSON or CSV): exit 0 when intact, 1 with a line naming
    the first broken seq and what (changed, removed, reordered, forked, checkpoint_signature,
    checkpoint_mismatch), 2 when a file cannot be read."""
    from .domain.audit_verify import Unreadable, load, verify

    try:
        document = load(_read(file))
        compared = [load(_read(other)) for other in others]
    except Unreadable as exc:
        click.echo(f"UNREADABLE: {exc}")
        sys.exit(2)
    jwks = _jwks(jwks_source) if jwks_source else None
    report = verify(document, jwks=jwks, compare=compared)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@audit.command("verify-evidence")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--jwks", "jwks_source", required=True,
              help="The bridge's audit keys: a saved copy of <bridge>/audit/jwks, or that URL.")
@click.option("--output", "output", type=click.Path(dir_okay=False, writable=True),
              default=None, help="Write the verified pack's content (JSON) to this file.")
def audit_verify_evidence(file, jwks_source, output):
    """Check an evidence pack (the signed file, or the API's JSON answer holding it): its
    signature, every event's hash at its chain position, and the links to the signed
    checkpoints. Exit 0 when intact, 1 with a line naming what is broken, 2 when a file
    or the keys cannot be read."""
    from .domain.evidence_verify import verify

    data = _read(file)
    token = _pack_token(data)
    if token is None:
        click.echo("UNREADABLE: the file is no evidence pack (a compact JWS, or JSON with "
                   "\"jws\")")
        sys.exit(2)
    report = verify(token, jwks=_jwks(jwks_source))
    for line in report.lines():
        click.echo(line)
    if report.ok and output:
        Path(output).write_text(json.dumps(report.pack, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    sys.exit(0 if report.ok else 1)


@audit.command("evidence")
@click.option("--tenant", "tenant_id", required=True, help="The tenant's id.")
@click.option("--membership", "membership_id", required=True, help="The membership's id.")
@click.option("--output", "output", required=True,
              type=click.Path(dir_okay=False, writable=True),
              help="Where to write the signed pack (a compact JWS).")
@click.pass_obj
def audit_evidence(obj, tenant_id, membership_id, output):
    """Write a membership's evidence pack for the operator (the same signed file the API
    answers); the download is an audit event of the tenant (actor operator). Exit 1 when
    the tenant or membership is unknown (nothing written)."""
    from .app import create_app, services
    from .cli import _migrated_database, _settings
    from .domain.errors import DomainError

    settings = _settings(obj)
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        pack = built.use_cases.evidence.download_as_operator(tenant_id, membership_id)
    except DomainError as exc:
        click.echo(f"refused: {exc.description} ({exc.code})")
        sys.exit(1)
    finally:
        built.db.dispose()
    Path(output).write_text(pack.jws + "\n", encoding="ascii")
    click.echo(f"evidence pack {pack.id} of membership {pack.membership_id} written to {output}")


def _pack_token(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        return None
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            return None
        text = document.get("jws") if isinstance(document, dict) else None
        if not isinstance(text, str):
            return None
    return text if text.count(".") == 2 and text.isascii() else None


def _read(path: str) -> bytes:
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES:
        click.echo(f"UNREADABLE: {path} is larger than {MAX_FILE_BYTES // 1024 ** 2} MB")
        sys.exit(2)
    return Path(path).read_bytes()


def _jwks(source: str) -> dict:
    try:
        if source.startswith(("https://", "http://")):
            import requests

            response = requests.get(source, timeout=10)
            response.raise_for_status()
            keys = response.json()
        else:
            keys = json.loads(Path(source).read_text(encoding="utf-8"))
    except Exception as exc:  # unreachable, not JSON, no such file: one line, exit 2
        click.echo(f"UNREADABLE: the keys from {source} ({type(exc).__name__})")
        sys.exit(2)
    if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
        click.echo(f"UNREADABLE: {source} is no JWK set")
        sys.exit(2)
    return keys


@audit.command("checkpoint")
@click.pass_obj
def audit_checkpoint(obj):
    """Check and sign now the head of every chain that moved since its last checkpoint
    (the maintenance loop does this every audit_checkpoint_seconds); exit 1 when a stored
    chain does not verify (nothing is signed for it)."""
    from .app import create_app, services
    from .cli import _migrated_database, _settings
    from .storage.db import utcnow

    settings = _settings(obj)
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        signed, broken = built.checkpoints.sign_due(utcnow(), every_moved=True)
    finally:
        built.db.dispose()
    for problem in broken:
        click.echo(f"chain {problem.chain} does not verify at seq {problem.seq} "
                   f"({problem.problem}): not signed")
    click.echo(f"{signed} checkpoint{'s' if signed != 1 else ''} signed")
    sys.exit(1 if broken else 0)


@audit.command("rotate-key")
@click.pass_obj
def audit_rotate_key(obj):
    """Make a new checkpoint key; the old ones stay published at /audit/jwks for good."""
    from .cli import _key_ring, _migrated_database, _settings
    from .domain.audit_checkpoints import CheckpointKeys
    from .storage.db import utcnow

    settings = _settings(obj)
    database = _migrated_database(settings.database_url)
    try:
        _key_ring(settings, database)  # stops when the key-encryption key does not fit
        with database.transaction() as session:
            kid = CheckpointKeys(database, settings.key_encryption_key).rotate(session, utcnow())
    finally:
        database.dispose()
    click.echo(f"new checkpoint key {kid} is active; running bridges pick it up within 10 s")


@audit.command("export")
@click.option("--tenant", "tenant_id", default=None, help="The tenant whose chain to export.")
@click.option("--system", "system", is_flag=True,
              help="Export the system chain instead: the events without a tenant (support's "
                   "and the operator's own).")
@click.option("--output", "output", type=click.Path(dir_okay=False, writable=True),
              default="-", show_default=True, help="Where to write the JSON export (- for "
                                                   "standard output).")
@click.pass_obj
def audit_export(obj, tenant_id, system, output):
    """Export one chain as the JSON that `idp-bridge audit verify` reads (the same document
    a tenant admin downloads from the access-log page), read from the database a page at a
    time. For the operator, who holds the database: the system chain has no other export."""
    from .app import create_app, services
    from .cli import _migrated_database, _settings
    from .domain.errors import DomainError

    if system == (tenant_id is not None):
        raise click.UsageError("give either --tenant TENANT or --system")
    settings = _settings(obj)
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        chains = built.use_cases.audit_chains
        pages = chains.operator_pages(None if system else tenant_id)
        try:
            first = next(pages)
        except DomainError as exc:  # an unknown tenant: one line, nothing written
            raise click.ClickException(exc.description) from None
        with click.open_file(output, "w", encoding="utf-8", atomic=output != "-") as out:
            for piece in chains.document_text(first, pages):
                out.write(piece)
    finally:
        built.db.dispose()
    if output != "-":
        click.echo(f"chain {first.chain} (head seq {first.head_seq}) written to {output}",
                   err=True)
