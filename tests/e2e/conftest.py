"""One running local stack per e2e module (`make run`'s `xpm-broker dev` on free ports)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import RunningStack, stack_env, start_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    running = start_stack(stack_env())
    yield running
    if running.process.poll() is None:
        running.interrupt()
