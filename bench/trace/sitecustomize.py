"""Stage timestamps of the bridge's feed path for bench/bench_revocation.py --trace.

Loaded (as ``sitecustomize``, through PYTHONPATH) only by the benchmark's bridge processes
when BENCH_REVOCATION_TRACE names a file: wraps the notifier, the long poll, the pending
read, the shared bookkeeping write and SET signing, and appends one line per event
(``time pid thread event stream``) to that file. Nothing of this is in production code.
"""

import os

_PATH = os.environ.get("BENCH_REVOCATION_TRACE")

if _PATH:
    import threading
    import time

    _fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _local = threading.local()

    def note(event, detail=""):
        os.write(_fd, f"{time.time():.6f} {os.getpid()} {threading.current_thread().name} "
                      f"{event} {detail}\n".encode())

    def _install():
        from idp_bridge import events
        from idp_bridge.ssf import bookkeeping, rfc8417, rfc8936, streams

        notify = events.RevocationNotifier.notify

        def traced_notify(self):
            note("notify")
            return notify(self)

        events.RevocationNotifier.notify = traced_notify

        poll = rfc8936.poll

        def traced_poll(transmitter, notifier, *, stream_id, client_id, body, **kwargs):
            _local.stream = stream_id[:8]
            acks = len(body.get("ack", [])) if isinstance(body, dict) else 0
            note("poll_in", f"{_local.stream} ack={acks}")
            result = poll(transmitter, notifier, stream_id=stream_id, client_id=client_id,
                          body=body, **kwargs)
            note("poll_out", f"{_local.stream} sets={len(result.get('sets', {}))}")
            return result

        rfc8936.poll = traced_poll

        read_pending = streams.Transmitter.read_pending

        def traced_read(self, *args, **kwargs):
            note("read_in", getattr(_local, "stream", ""))
            read = read_pending(self, *args, **kwargs)
            note("read_out", f"{getattr(_local, 'stream', '')} any={read.anything}")
            return read

        streams.Transmitter.read_pending = traced_read

        run = bookkeeping.WriteCoalescer.run

        def traced_run(self, function, *args, **kwargs):
            note("write_in", getattr(_local, "stream", ""))
            try:
                return run(self, function, *args, **kwargs)
            finally:
                note("write_out", getattr(_local, "stream", ""))

        bookkeeping.WriteCoalescer.run = traced_run

        sign = rfc8417.sign_set

        def traced_sign(ring, claims):
            note("sign_in", getattr(_local, "stream", ""))
            try:
                return sign(ring, claims)
            finally:
                note("sign_out", getattr(_local, "stream", ""))

        rfc8417.sign_set = traced_sign

        write = bookkeeping.WriteCoalescer._write

        def traced_write(self, batch):
            note("txn_in", f"{getattr(_local, 'stream', '')} pieces={len(batch)}")
            try:
                return write(self, batch)
            finally:
                note("txn_out", getattr(_local, "stream", ""))

        bookkeeping.WriteCoalescer._write = traced_write

        from idp_bridge.storage import db

        flush = db.WalFlush._fdatasync

        def traced_flush(self):
            note("fsync_in", getattr(_local, "stream", ""))
            try:
                return flush(self)
            finally:
                note("fsync_out", getattr(_local, "stream", ""))

        db.WalFlush._fdatasync = traced_flush

        enter, leave = db.WriterLock.__enter__, db.WriterLock.__exit__

        def traced_enter(self):
            note("lock_in", getattr(_local, "stream", ""))
            result = enter(self)
            note("lock_out", getattr(_local, "stream", ""))
            note("held_in", getattr(_local, "stream", ""))
            return result

        def traced_leave(self, *exc):
            note("held_out", getattr(_local, "stream", ""))
            return leave(self, *exc)

        db.WriterLock.__enter__, db.WriterLock.__exit__ = traced_enter, traced_leave

        from sqlalchemy.dialects.sqlite.base import SQLiteDialect

        commit = SQLiteDialect.do_commit

        def traced_commit(self, dbapi_connection):
            note("commit_in", getattr(_local, "stream", ""))
            try:
                return commit(self, dbapi_connection)
            finally:
                note("commit_out", getattr(_local, "stream", ""))

        SQLiteDialect.do_commit = traced_commit

        from idp_bridge.services import tenant_admin

        remove = tenant_admin.TenantAdmin.remove

        def traced_remove(self, *args, **kwargs):
            note("remove_in")
            try:
                return remove(self, *args, **kwargs)
            finally:
                note("remove_out")

        tenant_admin.TenantAdmin.remove = traced_remove

    _install()
