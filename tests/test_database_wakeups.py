"""Revocation wake-ups across processes without a broker (idp_bridge/events.py,
``DatabaseWakeups``; issue 16 item 7): a revocation committed through another connection (as
another process would) wakes this process's waiters — on SQLite seen in ``PRAGMA
data_version`` and the newest revocation id, on PostgreSQL by ``NOTIFY``/``LISTEN``. Other
writes wake nobody. Every wait has a deadline; nothing asserts a duration."""

from __future__ import annotations

import stat
import uuid

from conftest import wait_until
from idp_bridge.events import DatabaseWakeups, RevocationNotifier, WakeupInbox
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import Revocation, Tenant


def revoke(db) -> None:
    with db.transaction() as session:
        session.add(Revocation(kind="grant", value=str(uuid.uuid4()), tenant_id="10042",
                               subject="s", reason="removed_by_tenant", created_at=utcnow()))


def other_write(db) -> None:
    with db.transaction() as session:
        session.get(Tenant, "10042").name = f"Muster GmbH {uuid.uuid4().hex[:6]}"


def watching(url: str):
    """A watcher on its own Database (this process's), and a second Database on the same
    data standing for another process."""
    mine, other = Database(url), Database(url)
    notifier = RevocationNotifier()
    watcher = DatabaseWakeups(mine, notifier)
    return mine, other, notifier, watcher


def generation(notifier) -> int:
    with notifier._condition:
        return notifier._generation


def test_a_revocation_committed_elsewhere_wakes_the_waiters(new_database_url, backend):
    mine, other, notifier, watcher = watching(new_database_url())
    watcher.start()
    try:
        wait_until(lambda: watcher.watching, timeout=30, what="the watcher running")
        other_write(other)
        if backend == "sqlite":
            # The commit was seen (data_version moved) and woke nobody: no revocation.
            wait_until(lambda: watcher.seen_commits >= 1, timeout=30,
                       what="the watcher saw the other write")
            assert generation(notifier) == 0
        revoke(other)
        if backend == "postgresql":
            DatabaseWakeups(other, RevocationNotifier()).publish()  # what the other process runs
        wait_until(lambda: generation(notifier) >= 1, timeout=30,
                   what="a wake-up from the revocation committed elsewhere")
        # A waiter blocked in wait() returns once its check holds after the next one.
        revoke(other)
        if backend == "postgresql":
            DatabaseWakeups(other, RevocationNotifier()).publish()
        assert notifier.wait(lambda: generation(notifier) >= 2, timeout=30)
    finally:
        watcher.stop()
        mine.dispose()
        other.dispose()


def test_the_watcher_survives_a_database_it_cannot_open(tmp_path):
    """A missing SQLite file (read-only open fails): the loop backs off and keeps running;
    the waiters' own checks are untouched."""
    db = Database(f"sqlite:///{tmp_path / 'absent' / 'bridge.sqlite'}")
    (tmp_path / "absent" / "bridge.sqlite").unlink(missing_ok=True)
    notifier = RevocationNotifier()
    watcher = DatabaseWakeups(db, notifier)
    assert watcher.step() > 0  # an error: back off, no exception
    assert notifier.wait(lambda: True, timeout=1)
    db.dispose()


# --- SQLite: the committing process says so (a datagram to each process's inbox) ---

def test_a_revocation_elsewhere_wakes_at_once_through_the_inbox(tmp_path):
    """The watcher looks at the database only once a minute here: what wakes it within the
    test's deadline is the datagram the other process's publish() sends after its commit."""
    from idp_bridge.services.operator import add_tenant

    url = f"sqlite:///{tmp_path / 'bridge.sqlite'}"
    mine, other = Database(url), Database(url)
    other.upgrade()
    add_tenant(other, "10042", "Muster GmbH")
    notifier = RevocationNotifier()
    watcher = DatabaseWakeups(mine, notifier, interval=60.0)
    watcher.start()
    try:
        wait_until(lambda: watcher.watching and watcher.inbox is not None, timeout=30,
                   what="the watcher waiting on its inbox")
        inboxes = tmp_path / "bridge.sqlite.wakeups"
        assert stat.S_IMODE(inboxes.stat().st_mode) == 0o700
        assert [p.name for p in inboxes.iterdir()] == [watcher.inbox.path.name]
        revoke(other)
        DatabaseWakeups(other, RevocationNotifier()).publish()  # the other process's wake-up
        wait_until(lambda: generation(notifier) >= 1, timeout=20,
                   what="a wake-up through the inbox")
        # A datagram without a revocation (forged, or for another write): one look, no wake-up.
        seen = watcher.seen_commits
        other_write(other)
        WakeupInbox.send_all(inboxes)
        wait_until(lambda: watcher.seen_commits > seen, timeout=20, what="the look")
        assert generation(notifier) == 1
        # A process's own publish() does not write to its own inbox.
        assert WakeupInbox.send_all(inboxes, mine=watcher.inbox) == 0
    finally:
        watcher.stop()
        mine.dispose()
        other.dispose()
    assert list(inboxes.iterdir()) == []  # the inbox went with its watcher


def test_the_inbox_of_a_process_that_died_is_removed_by_the_next_sender(tmp_path):
    inboxes = tmp_path / "bridge.sqlite.wakeups"
    alive, dead = WakeupInbox.open(inboxes), WakeupInbox.open(inboxes)
    dead.sock.close()  # its process died: the file stays, nobody reads it
    try:
        assert WakeupInbox.send_all(inboxes) == 1
        assert [p.name for p in inboxes.iterdir()] == [alive.path.name]
        assert alive.sock.recv(16) == b"1"
    finally:
        alive.close()


def test_an_inbox_directory_others_may_enter_is_not_used(tmp_path):
    inboxes = tmp_path / "bridge.sqlite.wakeups"
    inboxes.mkdir(mode=0o755)
    inboxes.chmod(0o755)
    assert WakeupInbox.open(inboxes) is None
    (inboxes / "x.sock").touch()
    assert WakeupInbox.send_all(inboxes) == 0
    assert [p.name for p in inboxes.iterdir()] == ["x.sock"]  # nothing sent, nothing removed
