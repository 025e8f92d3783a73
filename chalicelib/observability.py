"""Structured logs, metrics and optional traces, with Powertools, configured once and lazily.

- Logs: every ``xpmb.*`` logger writes one JSON object per line through a Powertools
  ``Logger`` named ``xpmb`` (their parent), with the request id and the vendor/tenant of the
  call, and a formatter that masks tokens, secrets and tax numbers even if a careless log line
  carries one (checklist C4: the canary test proves none does in the first place).
- Metrics: CloudWatch EMF through Powertools; one call per data point with its dimensions
  (``record_metric``); namespace ``POWERTOOLS_METRICS_NAMESPACE`` (default ``xpm-broker``).
- Traces: X-Ray through the Powertools ``Tracer`` only when ``XPMB_TRACING=true``.

Nothing here runs at import: the first request or job pays for it (cold start is measured).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

LOGGER_NAME = "xpmb"
DEFAULT_NAMESPACE = "xpm-broker"
MASK = "***"

# Keys whose values are never logged, whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|secret|password|authorization|code_verifier|client_assertion|tax_number|signature)", re.I
)
# Values that look like credentials or tax numbers, wherever they appear in a message.
_SECRET_VALUE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # a JWT (access or id token)
    r"|whsec_[A-Za-z0-9+/=]{8,}"  # a webhook secret
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # an Authorization header value
    r"|(?<![\w.:-])\d{2,3}[ -]?\d{3}[ -]?\d{3}(?![\w.:-])"  # an 8-9 digit TFN/IRD number
)

_logger: Any = None
_tracer: Any = None


def mask_text(text: str) -> str:
    return _SECRET_VALUE.sub(MASK, text)


def mask_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    return value


def _formatter() -> Any:
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class MaskingFormatter(LambdaPowertoolsFormatter):
        """Powertools' JSON lines, with every field passed through the masks above."""

        def serialize(self, log: Any) -> str:
            masked = {key: mask_value(str(key), value) for key, value in dict(log).items()}
            return str(super().serialize(masked))

    return MaskingFormatter()


def get_logger() -> Any:
    """The Powertools logger that every ``xpmb.*`` module logger propagates to."""
    global _logger  # noqa: PLW0603 - one logger per process, built on first use
    if _logger is None:
        from aws_lambda_powertools import Logger

        level = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("XPMB_LOG_LEVEL") or "INFO"
        _logger = Logger(service=LOGGER_NAME, level=level, logger_formatter=_formatter())
        stage = os.environ.get("XPMB_STAGE") or ("local" if os.environ.get("AWS_ENDPOINT_URL") else None)
        if stage:
            _logger.append_keys(stage=stage)
        # On Lambda the runtime's root handler would print every line a second time; elsewhere
        # (the local stack, tests) records still reach the root logger and pytest's caplog.
        logging.getLogger(LOGGER_NAME).propagate = "AWS_LAMBDA_FUNCTION_NAME" not in os.environ
    return _logger


def bind_context(**keys: str | None) -> None:
    """Correlate this thread's log lines with a request id, vendor and tenant (None: drop a key)."""
    logger = get_logger()
    present = {k: v for k, v in keys.items() if v is not None}
    if present:
        logger.thread_safe_append_keys(**present)
    absent = [k for k, v in keys.items() if v is None]
    if absent:
        logger.thread_safe_remove_keys(absent)


def clear_context() -> None:
    if _logger is not None:
        _logger.thread_safe_clear_keys()


_muted = contextvars.ContextVar("xpmb_metrics_muted", default=False)


@contextlib.contextmanager
def metrics_muted() -> Iterator[None]:
    """No EMF output inside (the operator CLI: its stdout is for people and --json)."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def record_metric(
    name: str, value: float = 1.0, unit: str = "Count", *, service: str, **dimensions: str
) -> None:
    """One EMF data point now, with ``service`` and the given dimensions (e.g. ``outcome``)."""
    if _muted.get():
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_NAMESPACE)
    with single_metric(
        name=name,
        unit=MetricUnit(unit),
        value=value,
        namespace=namespace,
        default_dimensions={"service": service, **dimensions},
    ):
        pass


def job_metrics(service: str) -> Any:
    """A Powertools ``Metrics`` for one job's batch of points (flushed by the job's handler)."""
    from aws_lambda_powertools import Metrics

    return Metrics(
        namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_NAMESPACE), service=service
    )


def get_tracer() -> Any:
    """The X-Ray tracer when ``XPMB_TRACING=true`` (patches boto3 and requests), else None.

    The X-Ray SDK is not bundled (it would ship a second botocore in every zip): deployments that
    turn tracing on add the AWS-published Powertools layer, which carries it (docs/operator.md).
    Without it, tracing stays off and one warning says why.
    """
    global _tracer  # noqa: PLW0603 - one tracer per process
    if _tracer is None and os.environ.get("XPMB_TRACING", "").lower() in {"1", "true", "yes"}:
        from aws_lambda_powertools import Tracer

        try:
            _tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", DEFAULT_NAMESPACE))
        except ImportError:
            logging.getLogger("xpmb.observability").warning(
                "XPMB_TRACING is on but aws-xray-sdk is not installed (add the Powertools layer)"
            )
            _tracer = False
    return _tracer or None


def observe_event(event: Any, get_response: Any) -> Any:
    """Chalice middleware for the jobs (SQS, schedules): a fresh log context per invocation.

    HTTP requests get theirs (request id, vendor, tenant) from ``chalicelib.web.http``.
    """
    if hasattr(event, "method"):
        return get_response(event)
    context = getattr(event, "context", None)
    clear_context()
    bind_context(
        function=getattr(context, "function_name", None),
        aws_request_id=getattr(context, "aws_request_id", None),
    )
    get_tracer()
    return get_response(event)
