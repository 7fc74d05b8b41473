"""The ``redis://`` backend: atomic Lua scripts over redis-py's asyncio client.

See ``keys.py`` for the data layout and ``docs/redis.md`` for durability settings.
"""

from __future__ import annotations
