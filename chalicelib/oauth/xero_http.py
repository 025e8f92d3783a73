"""The one HTTP session the broker uses to talk to Xero (identity, connections, XPM).

Timeouts everywhere (checklist D4: connect 3 s, read 10 s), certificate validation always on,
and a session per process so TLS connections are reused on warm Lambdas.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter

TIMEOUT = (3.05, 10.0)
_local = threading.local()


def xero_session() -> requests.Session:
    """A per-thread session (requests.Session is not guaranteed thread-safe)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = "xpm-broker/0.1"
        _local.session = session
    return session


def request(method: str, url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    return xero_session().request(method, url, **kwargs)
