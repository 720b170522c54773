"""`Tracing`: one OpenTelemetry span per handler run, in the trace of its sender.

Give `Tracing()` to `Runtime(..., observe=[...])` (it needs `inorder[tracing]`,
the OpenTelemetry API; spans go to the global tracer provider, or the one
given). What happens when:

* **a message is sent** (`tell`, `ask`, `send`, a handler's `ctx.tell`, from
  any thread): the OpenTelemetry context active at the call is kept with the
  message, if a span is active in it; else nothing is.
* **it crosses a process**: with a durable store its journal record carries
  the span context as a W3C `traceparent` (the codec's optional trace field),
  so a message replayed after a restart, even a `kill -9`, keeps its parent; in
  cluster mode the Redis entry carries it (its `t` field), to whichever node
  runs the message.
* **its handler starts**: a span named `name` (`"inorder.handle"`, kind
  CONSUMER) starts. Its parent is the sender's span, not a link to it: the
  handler's span is then in the sender's trace, so a message's path from a
  webhook to its handler reads as one trace, across processes and restarts.
  Attributes: `inorder.key` (see `key`), `inorder.priority`, `inorder.attempt`,
  `inorder.wait_ms` (time in the mailbox), `inorder.redelivered` (replayed or
  taken over). While a handler runs, the span is
  the current one (`opentelemetry.trace.get_current_span()`), so the
  handler's own spans, and the messages it tells, are its children; so does a
  blocking handler (`blocking=True`) in its thread, which runs in a copy of the
  turn's context.
* **the run ends**: `inorder.outcome` says how: `handled`, `failed` (the
  handler raised or ran past `handler_timeout`; status ERROR and the exception
  recorded, even if a retry follows: the retry is another span, its
  `inorder.attempt` one more), `interrupted` (an interrupt or the shutdown) or
  `retry_after` (the handler raised `RetryAfter`).
* **it is dropped without a run** (cleared, expired, overflow, superseded,
  withdrawn, the shutdown, a restart budget given up, ...): a span of no
  duration, `inorder.outcome` `dropped` and `inorder.reason`, in the sender's
  trace too, so that a message that never ran is not a gap.

A turn that takes several messages (a `Batch`, `ctx.take_new()`) is one span,
for the message that started it. Off (no `Tracing`), nothing is captured, and
the runtime's cost is a few `is None` checks per message.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import TYPE_CHECKING, Any, Final

from supervisors.observe._optional import need

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

    from actors._mailbox import Envelope
    from actors.journal._codec import Codec
    from supervisors._runtime import Runtime

__all__ = ["Tracing"]

_KEY_MODES: Final = ("hash", "omit", "plain")
# A W3C traceparent: version, trace id, parent (span) id, flags; then, after a newline
# in the carried text, the tracestate header if there is one.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NONE: Final = object()  # `capture`'s answer when no span is active: nothing to carry


@functools.lru_cache(maxsize=8192)
def hash_key(key: str | int) -> str:
    """What `inorder.key` holds by default: the first 16 hex digits of the SHA-256 of
    the key's `str` (UTF-8). A pseudonym, not a secret: keys from a small space (numeric
    user ids) can be enumerated; use `key="omit"` where that matters."""
    return hashlib.sha256(str(key).encode()).hexdigest()[:16]


class Tracing:
    """Trace every handled message with OpenTelemetry: an observer (`Runtime(observe=...)`).

    `tracer_provider`: where the spans go (default: OpenTelemetry's global provider,
    as set when the spans are made). `key`: what `inorder.key` holds: `"hash"` (the
    default, `hash_key`), `"omit"` (no key attribute) or `"plain"` (the key itself).
    `name`: the spans' name. One `Tracing` per runtime; it may serve several.
    """

    __slots__ = ("_key", "_name", "_provider")

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        key: str = "hash",
        name: str = "inorder.handle",
    ) -> None:
        need("opentelemetry.trace", "tracing")
        if key not in _KEY_MODES:
            msg = f"key must be one of {', '.join(map(repr, _KEY_MODES))}, got {key!r}"
            raise ValueError(msg)
        if not isinstance(name, str) or not name:
            msg = f"name must be a non-empty str, got {name!r}"
            raise ValueError(msg)
        self._provider = tracer_provider
        self._key = key
        self._name = name

    def __repr__(self) -> str:
        return f"Tracing(key={self._key!r}, name={self._name!r})"

    async def open(self, runtime: Runtime) -> None:
        """Nothing to bind: spans are made once messages run."""

    def attached(self, runtime: Runtime) -> None:
        """Hook the tracer into the runtime's core, before anything is accepted."""
        core = runtime._core
        assert core is not None  # attached runs once the core exists
        if core.tracer is not None:
            msg = "this runtime is traced already: give it one Tracing"
            raise ValueError(msg)
        durable = runtime._durable
        tracer = _Tracer(
            self._provider, self._key, self._name, None if durable is None else durable.codec
        )
        core.tracer = core.outcomes.tracer = tracer

    async def close(self) -> None:
        """Nothing to release: the tracer provider is the application's (it flushes it)."""


class _Tracer:
    """The runtime's `TraceHook` (actors/_outcomes.py), made with OpenTelemetry."""

    __slots__ = (
        "_attach",
        "_codec",
        "_context",
        "_current",
        "_error",
        "_flags",
        "_key",
        "_kind",
        "_name",
        "_remote",
        "_root",
        "_span_of",
        "_state",
        "_status",
        "_tracer",
        "_with_span",
    )

    def __init__(
        self, provider: TracerProvider | None, key: str, name: str, codec: Codec | None
    ) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
        from opentelemetry.trace.span import TraceState
        from opentelemetry.trace.status import Status, StatusCode

        self._tracer = trace.get_tracer("inorder", tracer_provider=provider)
        self._key = key
        self._name = name
        self._codec = codec
        self._kind = SpanKind.CONSUMER
        self._current = context.get_current
        self._attach = context.attach
        self._context = SpanContext
        self._remote = NonRecordingSpan
        self._flags = TraceFlags
        self._state = TraceState
        self._span_of = trace.get_current_span
        self._with_span = trace.set_span_in_context
        self._root = context.Context()  # the parent of a message sent under no span
        self._status = Status
        self._error = StatusCode.ERROR

    # -- at the call site ---------------------------------------------------------------

    def capture(self) -> Any:
        ctx = self._current()
        return ctx if self._span_of(ctx).get_span_context().is_valid else _NONE

    def carry(self, envelope: Envelope, trace: Any, record: bytes | None) -> bytes | None:
        if trace is None:
            trace = self.capture()
        if trace is _NONE:
            return record
        envelope.trace = trace
        if record is not None and self._codec is not None:
            text = self.wire(trace)
            if text is not None:
                record = self._codec.with_trace(record, text)
        return record

    def wire(self, trace: Any) -> str | None:
        if trace is None or trace is _NONE:
            return None
        if type(trace) is str:
            return trace
        sc = self._span_of(trace).get_span_context()
        text = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"
        if sc.trace_state:
            text += "\n" + sc.trace_state.to_header()
        return text

    def _parent(self, trace: Any) -> Context:
        if trace is None:
            return self._root
        if type(trace) is not str:
            return trace  # type: ignore[no-any-return]
        head, _, state = trace.partition("\n")
        match = _TRACEPARENT.fullmatch(head)
        if match is None or match[1] == "ff":
            return self._root  # not a traceparent this reads: a trace of its own
        trace_id, span_id = int(match[2], 16), int(match[3], 16)
        if not trace_id or not span_id:
            return self._root
        sc = self._context(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=self._flags(int(match[4], 16)),
            trace_state=self._state.from_header([state]) if state else None,
        )
        return self._with_span(self._remote(sc), self._root)

    # -- in the handler's task ----------------------------------------------------------

    def _attributes(self, key: str | int, envelope: Envelope) -> dict[str, Any]:
        attributes: dict[str, Any] = {"inorder.priority": envelope.priority}
        if self._key == "hash":
            attributes["inorder.key"] = hash_key(key)
        elif self._key == "plain":
            attributes["inorder.key"] = key
        if envelope.redelivered:
            attributes["inorder.redelivered"] = True
        return attributes

    def begin(self, key: str | int, envelope: Envelope, wait: float) -> Span:
        parent = self._parent(envelope.trace)
        span = self._tracer.start_span(self._name, context=parent, kind=self._kind)
        if span.is_recording():  # a span the sampler dropped (or a no-op one) needs none
            attributes = self._attributes(key, envelope)
            attributes["inorder.attempt"] = envelope.attempt
            attributes["inorder.wait_ms"] = round(wait * 1000.0, 3)
            span.set_attributes(attributes)
        # `take` runs in the burst task that awaits the handler: attached there, the span
        # is current for the handler. Never detached: the next run's attach replaces it,
        # and the task (whose own copy of the context this is) ends with its burst.
        self._attach(self._with_span(span, parent))
        return span

    def end(self, span: Span, outcome: str, error: BaseException | None) -> None:
        if span.is_recording():
            span.set_attribute("inorder.outcome", outcome)
            if error is not None:
                span.record_exception(error)
                span.set_status(self._status(self._error, f"{type(error).__name__}: {error}"))
        span.end()

    def dropped(self, key: str | int, envelope: Envelope, reason: str) -> None:
        attributes = self._attributes(key, envelope)
        attributes["inorder.outcome"] = "dropped"
        attributes["inorder.reason"] = reason
        span = self._tracer.start_span(
            self._name,
            context=self._parent(envelope.trace),
            kind=self._kind,
            attributes=attributes,
        )
        span.end()
