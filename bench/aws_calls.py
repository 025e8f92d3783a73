"""Count and time the AWS API calls made while a block runs (boto3 and PynamoDB alike).

Both end in ``botocore.client.BaseClient._make_api_call``, so wrapping that one method sees every
DynamoDB and KMS call, with the SDK's own work around the round trip (parameter validation,
serialisation, SigV4 signing, retries, parsing). PynamoDB's own item (de)serialisation stays
outside. Installed around the timed rounds; the wrapper adds two clock reads per call.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient


@dataclass
class AwsCalls:
    operations: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, operation: str, seconds: float) -> None:
        with self._lock:
            self.operations[operation] += 1
            self.seconds += seconds


@contextmanager
def recording_aws_calls() -> Iterator[AwsCalls]:
    calls = AwsCalls()
    original = BaseClient._make_api_call

    def make_api_call(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, operation_name, api_params)
        finally:
            service = self.meta.service_model.service_name
            calls.add(f"{service}:{operation_name}", time.perf_counter() - started)

    BaseClient._make_api_call = make_api_call
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original
