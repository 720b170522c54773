"""Observability: what metrics and tracing cost when they are on.

P1's tell and P2's ask workloads (every user activated first; no-op handlers; the
largest user count of the run), each run three ways in the same run, starting
with a different one in every repeat:

* ``inorder``: no observer (what every other scenario measures);
* ``metrics``: ``observe=[Metrics(registry)]``, so every handled message is also
  counted in the wait and run histograms; the registry is scraped (text
  exposition, as a Prometheus server gets it) once before the clock stops, and
  that scrape is timed into the figure;
* ``tracing``: ``observe=[Tracing(provider)]`` with the OpenTelemetry SDK's
  ``TracerProvider`` and a ``BatchSpanProcessor`` whose exporter drops the spans
  (the cost of making, ending and queueing a span per message, not of shipping
  them), each message sent under an active span whose context it carries.

The figures are msg/s; the checks are ratios to ``inorder`` in the same run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from benchmarks._measure import Tracker, now
from benchmarks._runtime_peer import InorderPeer
from benchmarks._scenarios import (
    SUBJECT,
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_least,
    for_each_column,
    size_label,
)
from benchmarks._throughput import RUNTIME_IDLE, TIMEOUT, keys_for, warm_up

METRICS = "metrics"
TRACING = "tracing"
COLUMNS = (SUBJECT, METRICS, TRACING)

# Targets, from the first measurements (BENCHMARKS.md, "Observability") with a margin:
# metrics add two histogram buckets per handled message, on the compiled path; a span per
# message is the OpenTelemetry SDK's Python (about 70% of the time in its start_span and
# attributes, by profile), many times the runtime's own cost for a no-op handler.
METRICS_RATIO = 0.8
TRACING_RATIO = 0.04


def _observers(column: str) -> tuple[list[Any], Callable[[], object]]:
    """The column's observers and what to do before the clock stops (a scrape)."""
    if column == METRICS:
        from prometheus_client import CollectorRegistry, generate_latest

        from supervisors.observe import Metrics

        registry = CollectorRegistry(auto_describe=False)
        return [Metrics(registry)], functools.partial(generate_latest, registry)
    if column == TRACING:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from supervisors.observe import Tracing

        class Drop(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 20))
        return [Tracing(provider)], provider.shutdown
    return [], lambda: None


@contextlib.contextmanager
def _sent_under_a_span(column: str) -> Iterator[None]:
    """With tracing, the messages are sent inside a span (a webhook's), as in an app."""
    if column != TRACING:
        yield
        return
    from opentelemetry import trace

    with trace.get_tracer("benchmarks").start_as_current_span("webhook"):
        yield


async def observed_tell(column: str, users: int, messages: int) -> tuple[float, dict[str, float]]:
    """P1: messages/s of ``tell`` with a no-op handler, under the column's observers."""
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users)
    n = max(users, messages // users * users)
    observers, finish = _observers(column)
    peer = InorderPeer(handler, idle_timeout=RUNTIME_IDLE, runtime_options={"observe": observers})
    async with peer:
        tell = peer.runtime.tell
        await warm_up(peer, tracker, keys)
        tracker.expect(n)
        with _sent_under_a_span(column):
            t0 = now()
            for i in range(n):
                tell(keys[i % users], i)
            await tracker.wait(TIMEOUT)
        finish()  # the scrape: part of the cost
        elapsed = now() - t0
    return n / elapsed, {"messages": float(n), "seconds": elapsed}


async def observed_ask(column: str, users: int, messages: int) -> tuple[float, dict[str, float]]:
    """P2: asks/s, every ask issued at once and then awaited, under the column's observers."""

    async def handler(key: Any, message: Any) -> Any:
        return message

    keys = keys_for(users)
    n = max(users, messages // users * users)
    observers, finish = _observers(column)
    peer = InorderPeer(handler, idle_timeout=RUNTIME_IDLE, runtime_options={"observe": observers})
    async with peer:
        ask = peer.runtime.ask
        for future in [ask(key, -1) for key in keys]:
            await future
        with _sent_under_a_span(column):
            t0 = now()
            futures = [ask(keys[i % users], i) for i in range(n)]
            for future in futures:
                await future
        finish()
        elapsed = now() - t0
    return n / elapsed, {"messages": float(n), "seconds": elapsed}


def tell_case(params: Params) -> str:
    return f"P1 tell, {size_label(max(params.users))} users (msg/s)"


def ask_case(params: Params) -> str:
    return f"P2 ask, {size_label(max(params.users))} users (asks/s)"


Measure = Callable[[str], Awaitable[tuple[float, dict[str, float]]]]


def _missing(column: str) -> str | None:
    reason = InorderPeer.missing()
    if reason is not None:
        return reason
    module = {METRICS: "prometheus_client", TRACING: "opentelemetry.sdk"}.get(column)
    if module is not None:
        try:
            __import__(module)
        except ImportError:
            return f"n/a ({module} not installed)"
    return None


async def _columns(params: Params, case: str, measure: Measure) -> list[Cell]:
    return await for_each_column(params, case, COLUMNS, measure, _missing)


async def run_observe(params: Params) -> list[Cell]:
    users, messages = max(params.users), params.messages
    cells = await _columns(
        params, tell_case(params), functools.partial(observed_tell, users=users, messages=messages)
    )
    cells += await _columns(
        params, ask_case(params), functools.partial(observed_ask, users=users, messages=messages)
    )
    return cells


def check_observe(agg: Aggregate, params: Params) -> list[Check]:
    checks = []
    for case in (tell_case(params), ask_case(params)):
        name = case.split(",")[0]
        checks.append(
            at_least(
                f"{name} with metrics ≥ {METRICS_RATIO:g}x without",
                _ratio(agg, case, METRICS),
                METRICS_RATIO,
            )
        )
        checks.append(
            at_least(
                f"{name} with a span per message ≥ {TRACING_RATIO:g}x without",
                _ratio(agg, case, TRACING),
                TRACING_RATIO,
            )
        )
    return checks


def _ratio(agg: Aggregate, case: str, column: str) -> float | None:
    """The column's figure over inorder's (not inorder's over the column's)."""
    ratio = agg.ratio(case, column)
    return None if ratio is None else 1.0 / ratio


SCENARIOS = [
    Scenario(
        "observe",
        "What metrics and tracing cost when on",
        f"P1 and P2 with Metrics ≥ {METRICS_RATIO:g}x without; with a span per message "
        f"≥ {TRACING_RATIO:g}x without",
        "msg/s",
        True,
        run_observe,
        check_observe,
        "P1's tell and P2's ask workloads with no observer, with Metrics (histograms on, one "
        "scrape), and with Tracing (the OpenTelemetry SDK, spans dropped by the exporter)",
    ),
]
