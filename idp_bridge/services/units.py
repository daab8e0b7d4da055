"""The unit of work of use cases whose one expected constraint violation is a concurrent
request doing the same thing (two first redemptions by one advisor meeting the unique active
membership, two admins approving one request at once, two first approvals of one decision):
it becomes a :class:`~idp_bridge.domain.errors.Conflict` ``concurrent_change``, so no
SQLAlchemy error leaves a use case."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from ..domain.errors import Conflict


@contextmanager
def unit_of_work(db):
    try:
        with db.transaction() as session:
            yield session
    except IntegrityError:
        raise Conflict("a concurrent request changed this at the same moment; retry",
                       code="concurrent_change") from None
