"""XML mapping: a 10,000-client *detailed* ``client.api/list`` body through the broker's reader
(``mapping.read_clients``, what ``XpmClient`` uses for client lists: size cap, DTD pre-scan, the
hardened parser streaming, clients mapped as their end tags are parsed and then freed,
``<Response>`` check; then ``check_status``) against a bare ``lxml.etree.fromstring`` of the same
bytes. Target <= 1.5x. Peak memory of the broker path <= 3x the body.

The bytes are what the sandbox sends for a practice reseeded to 10,000 clients, fetched once
with the connection's bearer token. They are ~25 MB, over the broker's own 20 MB decoded cap
(and its 5 MB wire cap: ``XpmClient.list_clients`` would refuse them), so ``max_bytes`` is
raised here: this measures the mapper, not a call the broker would make.

Each timed call includes freeing what it built (the tree; for the broker, also the list), on
both sides alike.

Peak memory is measured in a fresh child process per path: the rise of RSS above what the
child held with the body loaded (libxml2's tree is malloc'd outside Python, so tracemalloc alone
cannot see it; its peak is reported too, as a lower bound).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from lxml import etree

from bench.children import run_child
from bench.context import RunContext
from bench.measure import Paired, alternate, relative_iqr, timed
from bench.results import Outcome, Result, Target
from chalicelib.xpm.mapping import read_clients
from chalicelib.xpm.xml import check_status, parse_response

NAME = "xml_mapping"
CLIENTS = 10_000
MEMORY_CHILD = """
import gc, json, sys
from pathlib import Path
from lxml import etree
from chalicelib.xpm.mapping import read_clients

body = Path(sys.argv[2]).read_bytes()
gc.collect()
_reset_peak()
before = _status_kib("VmRSS")
if sys.argv[1] == "broker":
    result = read_clients(body, max_bytes=len(body))
else:
    result = etree.fromstring(body)
print(json.dumps({"before_kib": before, "peak_kib": _status_kib("VmHWM")}))
"""


def fetch_body(context: RunContext) -> bytes:
    """The sandbox's detailed list for a practice of ``CLIENTS`` clients."""
    stack = context.stack()
    stack.reseed(CLIENTS)
    response = requests.get(
        stack.xpm_url("client.api/list"),
        params={"detailed": "true"},
        headers=stack.xpm_headers(),
        timeout=300,
    )
    response.raise_for_status()
    return response.content


def broker_mapping(body: bytes) -> list[dict[str, Any]]:
    root, clients = read_clients(body, max_bytes=len(body))
    check_status(root)
    assert len(clients) == CLIENTS, len(clients)
    return clients


class TimedBrokerMapping:
    """``broker_mapping`` timed whole; each round also times the hardened whole-tree parse alone
    (``parse_response``, untimed by the ratio) for context."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.parse_seconds: list[float] = []

    def __call__(self) -> float:
        started = time.perf_counter()
        clients = broker_mapping(self._body)
        elapsed = time.perf_counter() - started
        del clients
        self.parse_seconds.append(timed(lambda: parse_response(self._body, max_bytes=len(self._body))))
        return elapsed


def raw_parse(body: bytes) -> object:
    return etree.fromstring(body)


def run(context: RunContext) -> list[Outcome]:
    body = fetch_body(context)
    rounds = context.rounds(7)
    broker = TimedBrokerMapping(body)
    paired = alternate(rounds, lambda: timed(lambda: raw_parse(body)), broker)
    parse_ratios = [p / b for p, b in zip(broker.parse_seconds, paired.baseline, strict=True)]
    memory_rounds = context.rounds(2, quick=1)
    return [
        _time_result(paired, body, statistics.median(parse_ratios)),
        _memory_result(body, memory_rounds, traced=not context.quick),
    ]


def _time_result(paired: Paired, body: bytes, parse_ratio: float) -> Result:
    return Result(
        name=NAME,
        ratio=paired.median_ratio(),
        target=Target("ratio", 1.5, "<= 1.5x"),
        median_seconds=statistics.median(paired.measured),
        baseline_median_seconds=statistics.median(paired.baseline),
        spread=paired.spread(),
        round_ratios=paired.ratios,
        rounds=paired.rounds,
        parameters=_parameters(body),
        metrics={"hardened_parse_ratio": parse_ratio},
        note=(
            f"{CLIENTS:,} detailed clients, {len(body) / 1e6:.1f} MB of XML, streamed; the hardened "
            f"whole-tree parse alone is {parse_ratio:.2f}x the raw parse"
        ),
    )


def _parameters(body: bytes) -> dict[str, Any]:
    return {
        "clients": CLIENTS,
        "detailed": True,
        "body_bytes": len(body),
        "measured": "chalicelib.xpm.mapping.read_clients(body, max_bytes=len(body)) + check_status",
        "baseline": "lxml.etree.fromstring(body)",
    }


def _memory_result(body: bytes, rounds: int, *, traced: bool) -> Result:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "list.xml"
        path.write_bytes(body)
        broker_peaks, raw_peaks = _child_peaks(path, rounds)
    broker_peak, raw_peak = statistics.median(broker_peaks), statistics.median(raw_peaks)
    ratios = [peak / len(body) for peak in broker_peaks]
    metrics: dict[str, Any] = {
        "peak_bytes": broker_peak,
        "body_bytes": len(body),
        "baseline_peak_bytes": raw_peak,
        "baseline_ratio": raw_peak / len(body),
    }
    note = f"peak {broker_peak / len(body):.2f}x the body (raw lxml parse: {raw_peak / len(body):.2f}x"
    if traced:  # slow (tracemalloc hooks every allocation): full runs only
        traced_peak = _traced_peak(lambda: broker_mapping(body))
        metrics |= {"tracemalloc_peak_bytes": traced_peak, "tracemalloc_ratio": traced_peak / len(body)}
        note += f"; tracemalloc, Python objects only: {traced_peak / len(body):.2f}x"
    return Result(
        name=f"{NAME}.peak_memory",
        ratio=broker_peak / len(body),
        target=Target("ratio", 3.0, "<= 3x body"),
        median_seconds=None,
        baseline_median_seconds=None,
        spread=relative_iqr(ratios),
        round_ratios=ratios,
        rounds=rounds,
        parameters={
            **_parameters(body),
            "measured": "VmHWM rise above the child's RSS with the body loaded, broker path, fresh process",
            "baseline": "the same for lxml.etree.fromstring(body)",
            "ratio": "peak bytes / body bytes",
        },
        metrics=metrics,
        note=note + ")",
    )


def _child_peaks(path: Path, rounds: int) -> tuple[list[float], list[float]]:
    broker: list[float] = []
    raw: list[float] = []
    for _ in range(rounds):
        broker.append(_child_peak("broker", path))
        raw.append(_child_peak("raw", path))
    return broker, raw


def _child_peak(which: str, path: Path) -> float:
    _, report = run_child(MEMORY_CHILD, which, str(path))
    return float(report["peak_kib"] - report["before_kib"]) * 1024


def _traced_peak(operation: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        operation()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
