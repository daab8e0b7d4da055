"""Storage: SQLAlchemy 2 models, engine setup and Alembic migrations.

Nothing here may depend on one database's specifics: the embedded default is SQLite (WAL),
the scale-out backend PostgreSQL, with the same migrations.
"""

from .db import Database, utcnow
from . import models

__all__ = ["Database", "models", "utcnow"]
