"""The clock that grant lifetimes are measured on: Xero's, which is real time.

Refresh tokens die 60 days after issue on Xero's clock (xero-reference §1.5), so issue times,
rotation due times and the 30-minute grace are all read from ``xero_now()``. Leases, audit rows
and event timestamps stay on ``time.time()``.

On the local stack only, ``XPMB_XERO_CLOCK_URL`` may name the sandbox's ``GET /_sandbox/clock``:
``xero_now()`` then adds the sandbox's offset, so advancing the sandbox clock by 21 days makes
grants due and ``make run`` shows a rotation (docs/rotation.md). Settings refuses the variable
on any other stage.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("xpmb.clock")

REFRESH_SECONDS = 2.0  # how long a fetched offset is trusted
_lock = threading.Lock()
_cached: dict[str, tuple[float, float]] = {}  # url -> (offset, fetched at, monotonic)


def xero_now() -> float:
    """Seconds since the epoch on Xero's clock."""
    from chalicelib.config import get_settings

    url = get_settings().xero_clock_url
    return time.time() + (_offset(url) if url else 0.0)


def _offset(url: str) -> float:
    with _lock:
        cached = _cached.get(url)
    if cached is not None and time.monotonic() - cached[1] < REFRESH_SECONDS:
        return cached[0]
    import requests

    try:
        response = requests.get(url, timeout=2)
        response.raise_for_status()
        offset = float(response.json()["offset_seconds"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        logger.warning("could not read the sandbox clock at %s; keeping the last offset", url)
        return cached[0] if cached is not None else 0.0
    with _lock:
        _cached[url] = (offset, time.monotonic())
    return offset


def forget_offset() -> None:
    """Drop fetched offsets (tests that move the sandbox clock read it again at once)."""
    with _lock:
        _cached.clear()
