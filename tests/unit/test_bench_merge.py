"""bench.merge: a partial run replaces its benchmark's lines and keeps the others."""

from __future__ import annotations

from bench.merge import merge


def run(at: str, rev: str, *names: str) -> dict[str, object]:
    return {
        "generated_at": at,
        "results": [{"name": n, "git_revision": rev} for n in names if not n.startswith("!")],
        "not_available": [{"name": n[1:], "reason": "later"} for n in names if n.startswith("!")],
    }


def test_a_partial_run_replaces_only_its_benchmarks_lines() -> None:
    base = run("t1", "aaa", "cold_start", "rotation.achieved_rate", "!webhook_fanout")
    update = run("t2", "bbb", "rotation.achieved_rate", "rotation.planner_read_units", "webhook_fanout")
    merged = merge(base, update)
    assert [(r["name"], r["git_revision"]) for r in merged["results"]] == [
        ("cold_start", "aaa"),
        ("rotation.achieved_rate", "bbb"),
        ("rotation.planner_read_units", "bbb"),
        ("webhook_fanout", "bbb"),
    ]
    assert merged["not_available"] == []
    assert merged["merged_from"] == ["t1", "t2"]
