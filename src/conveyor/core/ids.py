"""Job ids: UUIDv7 strings, sortable by creation time and strictly increasing per process."""

from __future__ import annotations

import secrets
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF
_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62


def new_job_id() -> str:
    """A UUIDv7 (RFC 9562) string: 48 bits of Unix milliseconds, a 12-bit counter
    (``rand_a``, RFC 9562 §6.2 method 1: seeded at random each millisecond, + 1 for each
    further id in that millisecond) and 62 random bits.

    Strictly increasing within the process, across threads (under a lock). Ids no longer
    run ahead of the clock at high rates (``uuid6.uuid7`` bumped the millisecond for every
    id made within one), and no ``uuid.UUID`` object is built: most of the cost of an id.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, secrets.randbits(11)
        else:
            ms = _last_ms
            _counter += 1
            if _counter > _COUNTER_MAX:  # 4,096 ids in one millisecond: borrow the next one
                ms = _last_ms = ms + 1
                _counter = secrets.randbits(11)
        counter = _counter
    value = (ms & 0xFFFFFFFFFFFF) << 80 | _VERSION | counter << 64 | _VARIANT | secrets.randbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
