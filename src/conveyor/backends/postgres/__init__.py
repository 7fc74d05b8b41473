"""PostgreSQL backend (``postgresql://`` and ``postgres://``): SKIP LOCKED batch claims,
LISTEN/NOTIFY wake-ups and events, transactional enqueue. Needs ``conveyor[postgres]``.

Importing this package does not import psycopg; ``backend.py`` does.
"""

from __future__ import annotations
