"""``idp-bridge audit``: verify an exported audit chain offline, sign the due checkpoints
now, make a new checkpoint key (docs/audit-chain.md)."""

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
