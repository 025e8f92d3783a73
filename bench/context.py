"""What every benchmark gets: the round counts for this run and the shared local stack (lazy)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

from bench.stack import LocalStack, local_stack


@dataclass
class RunContext:
    quick: bool = False
    _exits: ExitStack = field(default_factory=ExitStack)
    _stack: LocalStack | None = None

    def rounds(self, full: int, quick: int = 3) -> int:
        return quick if self.quick else full

    def stack(self) -> LocalStack:
        """The moto + sandbox + connected broker stack, started on first use and kept for the run."""
        if self._stack is None:
            self._stack = self._exits.enter_context(local_stack())
        return self._stack

    def close(self) -> None:
        self._exits.close()
