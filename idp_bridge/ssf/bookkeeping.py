"""Group commit of the feed's bookkeeping: many polls' writes in one transaction.

A revocation wakes every waiting long poll at once. Each one's answer needs a little writing
first (the stream's delivered-through ceiling, the acknowledgements the poll carried, the
stream seen), and written one transaction each they queued behind the database's single
writer and its flush, one after another. :class:`WriteCoalescer` runs the writes of
concurrent callers in one transaction: the first caller to arrive while nothing is being
written writes at once (no waiting for company, except for the other deliveries of one
wake-up: :class:`DeliveriesFirst`), and whoever arrives while that transaction runs joins
the next one, written by the first of them as soon as the current one has committed. A
caller's :meth:`~WriteCoalescer.run` returns only after the transaction holding its work
has committed (durable, like any other transaction), so what comes after it — an answer
sent, an acknowledgement accepted — can rely on it.

Each piece of work runs in a savepoint of its own (unless its caller says it changes nothing
when it raises): if it raises, only its own changes are undone and only its caller sees the
exception; the others commit. If the transaction itself fails (the database unreachable,
the commit refused), every caller of that batch sees the error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.exc import OperationalError

_UNSET = object()


@dataclass(eq=False)
class _Work:
    function: Callable[[Any], Any]
    #: False: the function changes nothing when it raises (one statement, or a check before
    #: it), so it needs no savepoint of its own.
    savepoint: bool = True
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

    def run(self, function: Callable[[Any], Any], gather: Callable[[], Any] | None = None,
            queued: Callable[[], Any] | None = None, *, savepoint: bool = True):
        """``function(session)`` inside a write transaction shared with concurrent callers;
        returns its result once that transaction has committed, or raises its exception
        (or the transaction's). ``gather``: called by the caller that is to write, before
        it takes what is queued, to wait (briefly) for the company it expects (the other
        deliveries of one wake-up: :meth:`DeliveriesFirst.gather`); ``queued``: called once
        the work is queued (:meth:`Delivery.ready`: a writer gathering sees it queued);
        ``savepoint=False``: ``function`` changes nothing when it raises (a single UPDATE
        whose failure is a NotFound after it matched no row), so it runs without a
        savepoint of its own (two statements fewer inside the writer lock)."""
        work = _Work(function, savepoint)
        with self._condition:
            self._queue.append(work)
            if queued is not None:
                queued()
            while not work.done and self._writing:
                self._condition.wait()
            if work.done:
                return self._outcome(work)
            # Nothing is being written: this caller writes everything queued, its own
            # piece among it.
            self._writing = True
        batch: list[_Work] = []
        try:
            if gather is not None:
                gather()  # whoever arrives meanwhile queues (we are writing): this batch
            with self._condition:
                batch, self._queue = self._queue, []  # at most one piece per waiting thread
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
                        if piece.savepoint:
                            with session.begin_nested():
                                piece.result = piece.function(session)
                        else:
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


class DeliveriesFirst:
    """The long polls answering one wake-up, within one process: they go before
    acknowledgements, and they record their deliveries in one transaction.

    A revocation wakes every waiting long poll of a process at once; each reads what is
    pending, signs, records its delivery (:class:`WriteCoalescer`) and answers, all on one
    interpreter. Two things made the last of them late:

    * the first receivers answered send their next poll, carrying their acknowledgements, a
      few milliseconds later, and writing those took the interpreter and the writer from the
      deliveries still to answer. So a poll with acknowledgements first waits, at most
      :attr:`hold` seconds, until no delivery of this process is in progress
      (:meth:`wait_for_deliveries`); its acknowledgements are still committed before it
      reads what is pending and before it answers;
    * they all read and signed at once, and the first delivery to be read wrote its record
      alone while the others ran: the transaction holding the database's one writer (every
      process's) took 6 to 25 ms instead of about one (``bench_revocation --trace``), its
      thread waiting for the interpreter between statements, and the next records queued
      behind it in twos and threes. So deliveries read and sign one at a time
      (:attr:`computing`), and the one that is to write first waits, at most
      :attr:`gather_for` seconds, until every delivery of the wake-up has read, signed and
      queued its record (:meth:`gather`): one short transaction per process, with nothing
      else of the wake-up running.

    A delivery is in progress from its read (:meth:`start`, which returns it) through its
    record (:meth:`Delivery.ready`: read, signed and its record queued) to its answer
    (:meth:`Delivery.done`).
    """

    def __init__(self, hold: float = 0.05, gather_for: float = 0.02):
        self.hold = hold
        self.gather_for = gather_for
        self._condition = threading.Condition()
        self._active = 0   # deliveries in progress
        self._reading = 0  # of them, those that have not queued their record yet
        #: Held by a delivery while it reads and signs (one at a time in a process).
        self.computing = threading.Lock()
        #: Acknowledging polls that waited for deliveries (for tests and metrics).
        self.waited = 0

    def start(self) -> "Delivery":
        """A woken long poll reads what is pending (it may answer)."""
        with self._condition:
            self._active += 1
            self._reading += 1
        return Delivery(self)

    def _change(self, active: int, reading: int) -> None:
        with self._condition:
            self._active += active
            self._reading += reading
            self._condition.notify_all()

    def gather(self) -> None:
        """The first delivery to write waits for the others still reading (bounded)."""
        self._wait(lambda: self._reading, self.gather_for)

    def wait_for_deliveries(self) -> bool:
        """Before writing acknowledgements: wait (at most :attr:`hold`) while deliveries are
        in progress; returns whether it waited."""
        with self._condition:
            if not self._active:
                return False
            self.waited += 1
        self._wait(lambda: self._active, self.hold)
        return True

    def _wait(self, busy, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._condition:
            while busy():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._condition.wait(remaining)


class Delivery:
    """One delivery in progress (:meth:`DeliveriesFirst.start`): it holds the process's
    :attr:`~DeliveriesFirst.computing` lock from :meth:`compute` (before its read) to
    :meth:`ready` (signed) or :meth:`done`, whichever comes first."""

    def __init__(self, deliveries: DeliveriesFirst):
        self._deliveries = deliveries
        self._reading = True
        self._holding = False
        self._done = False
        #: For :meth:`WriteCoalescer.run`: wait for the wake-up's other deliveries.
        self.gather = deliveries.gather

    def compute(self) -> None:
        """Wait for the deliveries reading and signing before it (one at a time)."""
        if not self._holding and not self._done:
            self._deliveries.computing.acquire()
            self._holding = True

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._deliveries.computing.release()

    def ready(self) -> None:
        """Read, signed and its record queued (once; later calls do nothing)."""
        self._release()
        if self._reading and not self._done:
            self._reading = False
            self._deliveries._change(0, -1)

    def done(self) -> None:
        """It answered, or waits again (once; later calls do nothing)."""
        self._release()
        if not self._done:
            self._done = True
            self._deliveries._change(-1, -1 if self._reading else 0)


__all__ = ["DeliveriesFirst", "Delivery", "WriteCoalescer"]
