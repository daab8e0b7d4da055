"""Group commit of the feed's bookkeeping: many polls' writes in one transaction.

A revocation wakes every waiting long poll at once. Each one's answer needs a little writing
first (the stream's delivered-through ceiling, the acknowledgements the poll carried, the
stream seen), and written one transaction each they queued behind the database's single
writer and its flush, one after another. :class:`WriteCoalescer` runs the writes of
concurrent callers in one transaction: the first caller to arrive while nothing is being
written writes at once (no waiting for company), and whoever arrives while that
transaction runs joins the next one, written by the first of them as soon as the current one
has committed. A caller's :meth:`~WriteCoalescer.run` returns only after the transaction
holding its work has committed (durable, like any other transaction), so what comes after
it — an answer sent, an acknowledgement accepted — can rely on it.

Each piece of work runs in a savepoint of its own: if it raises, only its own changes are
undone and only its caller sees the exception; the others commit. If the transaction
itself fails (the database unreachable, the commit refused), every caller of that batch
sees the error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.exc import OperationalError

_UNSET = object()


@dataclass(eq=False)
class _Work:
    function: Callable[[Any], Any]
    result: Any = _UNSET
    error: BaseException | None = None
    done: bool = field(default=False)


class WriteCoalescer:
    """Runs ``function(session)`` of concurrent callers in one write transaction of ``db``."""

    def __init__(self, db):
        self.db = db
        self._condition = threading.Condition()
        self._queue: list[_Work] = []
        self._writing = False
        #: Transactions written, and pieces of work in them (for tests and metrics).
        self.transactions = 0
        self.pieces = 0

    def run(self, function: Callable[[Any], Any]):
        """``function(session)`` inside a write transaction shared with concurrent callers;
        returns its result once that transaction has committed, or raises its exception
        (or the transaction's)."""
        work = _Work(function)
        with self._condition:
            self._queue.append(work)
            while not work.done and self._writing:
                self._condition.wait()
            if work.done:
                return self._outcome(work)
            # Nothing is being written: this caller writes everything queued, its own
            # piece among it.
            self._writing = True
            batch, self._queue = self._queue, []  # at most one piece per waiting thread
        try:
            self._write(batch)
        finally:
            with self._condition:
                for piece in batch:
                    piece.done = True
                self._writing = False
                self._condition.notify_all()
        return self._outcome(work)

    def _write(self, batch: list[_Work]) -> None:
        try:
            with self.db.transaction() as session:
                for piece in batch:
                    try:
                        with session.begin_nested():
                            piece.result = piece.function(session)
                    except OperationalError:
                        raise  # the database, not the piece: the whole transaction fails
                    except Exception as exc:  # undone alone; its caller gets the exception
                        piece.error = exc
                    # Each piece reads the rows afresh (another may have changed them with
                    # an UPDATE the loaded objects do not show); its own are flushed.
                    session.expunge_all()
        except Exception as exc:
            for piece in batch:
                piece.result, piece.error = _UNSET, exc
            return
        self.transactions += 1
        self.pieces += len(batch)

    @staticmethod
    def _outcome(work: _Work):
        if work.error is not None:
            raise work.error
        if work.result is _UNSET:  # the writer was interrupted (KeyboardInterrupt, exit)
            raise RuntimeError("the transaction holding this work did not complete")
        return work.result


__all__ = ["WriteCoalescer"]
