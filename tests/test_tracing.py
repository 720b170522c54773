"""OpenTelemetry tracing (`supervisors.observe.Tracing`): a span per handler run, in its
sender's trace, in memory, through the durable journal across a restart and a SIGKILL,
and across cluster nodes on the embedded Redis.

Every test gives `Tracing` a fresh SDK `TracerProvider` with an in-memory exporter
(never the global provider), and controls time by quiescence (`wait_idle`), not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actors
from actors import Context, RetryAfter, UserActor
from actors.journal._codec import Codec
from actors.journal._codec_format import packb
from supervisors import RedisCluster, RestartPolicy, Runtime
from supervisors.cluster._shards import shard_of
from supervisors.observe._tracing import Tracing, hash_key
from tests.helpers import in_flight, settle, until

pytestmark = pytest.mark.timeout(60)

PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent

# What handlers saw: (message, the current span's context as the handler sees it).
SEEN: list[tuple[Any, trace.SpanContext]] = []
GATE: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    GATE.clear()
    GATE["open"] = asyncio.Event()


class Spans:
    """A provider whose spans are kept in memory, and what a test asks of them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def handled(self, name: str = "inorder.handle") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def of(self, message: Any) -> ReadableSpan:
        """The handler span of the run that saw `message` (the first one)."""
        span_id = next(sc.span_id for m, sc in SEEN if m == message)
        return next(
            s for s in self.handled() if s.context is not None and s.context.span_id == span_id
        )


@pytest.fixture
def spans() -> Iterator[Spans]:
    kept = Spans()
    yield kept
    kept.provider.shutdown()


class Bot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((message, trace.get_current_span().get_span_context()))
        if message == "boom":
            raise ValueError("boom")
        if message == "once" and ctx.attempt == 1:
            raise ValueError("first attempt")
        if message == "later" and [m for m, _ in SEEN].count("later") == 1:
            raise RetryAfter(0.0)  # once (a RetryAfter is not an attempt: ctx.attempt stays)
        if message == "hold":
            await GATE["open"].wait()
        if isinstance(message, tuple) and message[0] == "relay":
            ctx.tell(message[1], "relayed")
        return message


class PlainBot(UserActor):
    def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((message, trace.get_current_span().get_span_context()))
        return message


class BlockingBot(PlainBot):
    blocking = True  # on_message runs in the thread pool


@contextlib.asynccontextmanager
async def traced(
    spans: Spans, actor: type[UserActor] = Bot, **options: Any
) -> AsyncIterator[Runtime]:
    tracing = Tracing(spans.provider, key=options.pop("key", "hash"))
    options.setdefault("restart", RestartPolicy(max_retries=0))
    rt = await Runtime(actor, observe=[tracing], idle_timeout=None, **options).start()
    try:
        yield rt
    finally:
        if rt.stats()["state"] == "running":
            GATE["open"].set()
            await asyncio.wait_for(rt.stop(timeout=1.0), 5)


def attr(span: ReadableSpan, name: str) -> Any:
    return dict(span.attributes or {}).get(name)


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def ids(span: Any) -> tuple[int, int]:
    sc = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return sc.trace_id, sc.span_id


# -- in memory -------------------------------------------------------------------------


async def test_a_span_per_message_whose_parent_is_the_sender_s_span(spans: Spans) -> None:
    async with traced(spans) as rt:
        with spans.tracer.start_as_current_span("webhook") as webhook:
            rt.tell("k", 1)
            assert await rt.ask("k", 2) == 2
        await settle(rt)
        trace_id, span_id = ids(webhook)
        for message in (1, 2):
            span = spans.of(message)
            assert span.context.trace_id == trace_id
            assert parent_of(span) == span_id
            assert span.kind is trace.SpanKind.CONSUMER
            attributes = dict(span.attributes or {})
            assert attributes["inorder.outcome"] == "handled"
            assert attributes["inorder.attempt"] == 1
            assert attributes["inorder.priority"] == 0
            assert attributes["inorder.key"] == hash_key("k") != "k"
            assert attributes["inorder.wait_ms"] >= 0
            assert span.status.status_code is StatusCode.UNSET
        assert len(spans.handled()) == 2


async def test_the_handler_sees_its_span_as_current_and_its_tells_are_children(
    spans: Spans,
) -> None:
    async with traced(spans) as rt:
        with spans.tracer.start_as_current_span("webhook") as webhook:
            rt.tell("a", ("relay", "b"))
        await settle(rt)
        first = spans.of(("relay", "b"))
        relayed = spans.of("relayed")
        # What the handler saw as current is its own span (spans.of found it by that id).
        assert relayed.context.trace_id == first.context.trace_id == ids(webhook)[0]
        assert parent_of(relayed) == first.context.span_id


async def test_a_plain_handler_sees_its_span_too(spans: Spans) -> None:
    async with traced(spans, PlainBot) as rt:
        with spans.tracer.start_as_current_span("webhook") as webhook:
            rt.tell("k", "plain")
        await settle(rt)
        assert parent_of(spans.of("plain")) == ids(webhook)[1]


async def test_a_blocking_handler_in_its_thread_sees_its_span_too(spans: Spans) -> None:
    async with traced(spans, BlockingBot) as rt:
        with spans.tracer.start_as_current_span("webhook") as webhook:
            rt.tell("k", "blocking")
        await settle(rt)
        span = spans.of("blocking")
        assert parent_of(span) == ids(webhook)[1]
        (seen,) = [context for message, context in SEEN if message == "blocking"]
        assert seen.span_id == span.context.span_id


async def test_a_message_sent_under_no_span_starts_a_trace_of_its_own(spans: Spans) -> None:
    async with traced(spans) as rt:
        with spans.tracer.start_as_current_span("before"):
            rt.tell("k", "warm")
        await settle(rt)
        rt.tell("k", "root")  # under no span; the burst task's leftover context is not used
        await settle(rt)
        root = spans.of("root")
        assert root.parent is None
        assert root.context.trace_id != spans.of("warm").context.trace_id


async def test_a_tell_from_another_thread_is_in_that_thread_s_trace(spans: Spans) -> None:
    async with traced(spans) as rt:
        sent: list[tuple[int, int]] = []

        def producer() -> None:
            with spans.tracer.start_as_current_span("in a thread") as span:
                sent.append(ids(span))
                rt.tell("k", "from a thread")

        thread = threading.Thread(target=producer)
        with spans.tracer.start_as_current_span("on the loop"):  # not the one to use
            thread.start()
            thread.join()
        await settle(rt)
        span = spans.of("from a thread")
        assert (span.context.trace_id, parent_of(span)) == sent[0]


async def test_a_failure_is_an_error_span_with_the_exception(spans: Spans) -> None:
    async with traced(spans) as rt:
        with pytest.raises(ValueError, match="boom"):
            await rt.ask("k", "boom")
        await settle(rt)
        span = spans.of("boom")
        assert attr(span, "inorder.outcome") == "failed"
        assert span.status.status_code is StatusCode.ERROR
        assert "ValueError" in (span.status.description or "")
        assert [e.name for e in span.events] == ["exception"]


async def test_a_retried_message_has_a_span_per_attempt(spans: Spans) -> None:
    async with traced(spans, restart=RestartPolicy(max_retries=1)) as rt:
        with spans.tracer.start_as_current_span("webhook") as webhook:
            assert await rt.ask("k", "once") == "once"
            assert await rt.ask("k", "later") == "later"
        await settle(rt)
        runs = {(attr(s, "inorder.attempt"), attr(s, "inorder.outcome")) for s in spans.handled()}
        assert runs == {(1, "failed"), (2, "handled"), (1, "retry_after"), (1, "handled")}
        assert {s.context.trace_id for s in spans.handled()} == {ids(webhook)[0]}


async def test_an_interrupted_run_ends_interrupted(spans: Spans) -> None:
    async with traced(spans) as rt:
        rt.tell("k", "hold")
        await in_flight(rt, 1)
        rt.tell("k", "urgent", priority=1, interrupt=True)
        await settle(rt)
        hold = spans.of("hold")
        assert attr(hold, "inorder.outcome") == "interrupted"
        assert hold.status.status_code is StatusCode.UNSET
        urgent = spans.of("urgent")
        assert attr(urgent, "inorder.priority") == 1


async def test_a_message_dropped_before_it_ran_gets_a_short_span(spans: Spans) -> None:
    async with traced(spans) as rt:
        rt.tell("k", "hold")
        await in_flight(rt, 1)
        with spans.tracer.start_as_current_span("webhook") as webhook:
            rt.tell("k", "waiting")
        rt.tell("k", "clear", priority=1, clear=True)
        GATE["open"].set()
        await settle(rt)
        dropped = [s for s in spans.handled() if attr(s, "inorder.outcome") == "dropped"]
        assert len(dropped) == 1
        assert attr(dropped[0], "inorder.reason") == "cleared"
        assert parent_of(dropped[0]) == ids(webhook)[1]
        assert "waiting" not in [m for m, _ in SEEN]


@pytest.mark.parametrize(("mode", "expected"), [("omit", None), ("plain", "k")])
async def test_the_key_can_be_omitted_or_kept_plain(spans: Spans, mode: str, expected: Any) -> None:
    async with traced(spans, key=mode) as rt:
        await rt.ask("k", 1)
        await settle(rt)
        assert dict(spans.of(1).attributes or {}).get("inorder.key") == expected


async def test_without_tracing_nothing_is_captured_and_no_span_made(spans: Spans) -> None:
    captured: list[Any] = []

    class Looks(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            captured.append(ctx._cell.current.trace)  # type: ignore[union-attr]
            return message

    async with Runtime(Looks, idle_timeout=None) as rt:
        with spans.tracer.start_as_current_span("webhook"):
            rt.tell("k", 1)
            await rt.ask("k", 2)
        await settle(rt)
    assert captured == [None, None]
    assert [s.name for s in spans.exporter.get_finished_spans()] == ["webhook"]


async def test_bad_arguments_and_a_second_tracing_are_refused(spans: Spans) -> None:
    with pytest.raises(ValueError, match="key must be one of"):
        Tracing(key="raw")
    with pytest.raises(ValueError, match="name must be"):
        Tracing(name="")
    rt = Runtime(Bot, observe=[Tracing(spans.provider), Tracing(spans.provider)])
    with pytest.raises(ValueError, match="traced already"):
        await rt.start()


# -- the codec: the optional trace field -----------------------------------------------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_an_envelope_carries_its_trace_and_an_untraced_one_is_unchanged() -> None:
    codec = Codec()
    plain = codec.encode_envelope("k", "hi", accepted_at=1.0)
    # The format before tracing: eight fields, byte for byte.
    assert plain == packb([1, "k", 0, 0, 1.0, None, packb("hi"), None])
    assert codec.decode_envelope(plain).trace is None
    traced_record = codec.encode_envelope("k", "hi", accepted_at=1.0, trace=TRACEPARENT)
    assert codec.decode_envelope(traced_record).trace == TRACEPARENT
    stamped = codec.with_trace(plain, TRACEPARENT)
    assert stamped == traced_record
    assert codec.with_trace(stamped, TRACEPARENT) == stamped  # traced already: as is


def test_a_bad_trace_field_is_refused_both_ways() -> None:
    codec = Codec(max_size=200)
    with pytest.raises(actors.CodecError, match="trace must be"):
        codec.encode_envelope("k", "hi", accepted_at=1.0, trace="x" * 2000)
    with pytest.raises(actors.CodecError, match="trace context"):
        codec.decode_envelope(packb([1, "k", 0, 0, 1.0, None, packb("hi"), None, 7]))
    big = codec.encode_envelope("k", "x" * 150, accepted_at=1.0)
    assert codec.with_trace(big, TRACEPARENT) == big  # it would pass max_size: kept as is


# -- durable: across a restart and a SIGKILL -------------------------------------------


async def test_a_journaled_message_keeps_its_trace_across_a_restart(
    spans: Spans, tmp_path: Path
) -> None:
    store = tmp_path / "journal.db"
    async with traced(spans, store=store) as rt:
        rt.tell("k", "hold")
        await in_flight(rt, 1)
        with spans.tracer.start_as_current_span("webhook") as webhook:
            await rt.send("k", "after the restart")
        await rt.stop(drain=False)  # "after the restart" never ran: it stays journaled
    assert "after the restart" not in [m for m, _ in SEEN]
    GATE["open"].set()  # "hold" is replayed too (cut short by the stop): let it through
    later = Spans()
    async with traced(later, store=store) as rt:
        await settle(rt)
    span = later.of("after the restart")
    assert (span.context.trace_id, parent_of(span)) == ids(webhook)
    assert attr(span, "inorder.redelivered") is True
    later.provider.shutdown()


CHILD = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from opentelemetry.sdk.trace import TracerProvider
from actors import UserActor
from supervisors import Runtime
from supervisors.observe._tracing import Tracing

class Wedged(UserActor):
    async def on_message(self, message, ctx):
        await asyncio.Event().wait()  # never returns: the message is in flight at the kill

async def main():
    provider = TracerProvider()
    async with Runtime(Wedged, store=sys.argv[2], observe=[Tracing(provider)]) as rt:
        with provider.get_tracer("child").start_as_current_span("webhook") as span:
            await rt.send("k", "killed")
        sc = span.get_span_context()
        print(f"sent {sc.trace_id} {sc.span_id}", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def send_and_kill(store: Path) -> tuple[int, int]:
    """Run CHILD until its message is durable and in flight, SIGKILL it: the sender's ids."""
    with subprocess.Popen(
        [sys.executable, "-P", "-c", CHILD, str(PACKAGE_DIR), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("sent "), line + child.stdout.read()
            os.kill(child.pid, signal.SIGKILL)  # the child's own pid
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)
    _, trace_id, span_id = line.split()
    return int(trace_id), int(span_id)


async def test_a_message_in_flight_at_a_sigkill_keeps_its_trace(
    spans: Spans, tmp_path: Path
) -> None:
    store = tmp_path / "journal.db"
    sender = await asyncio.wait_for(asyncio.to_thread(send_and_kill, store), 30)
    async with traced(spans, store=store) as rt:
        await settle(rt)
    span = spans.of("killed")
    assert (span.context.trace_id, parent_of(span)) == sender
    assert attr(span, "inorder.attempt") == 2


# -- cluster: across nodes, through Redis ----------------------------------------------


SHARDS = 16


def cluster(url: str, **overrides: Any) -> RedisCluster:
    options: dict[str, Any] = {
        "n_shards": SHARDS,
        "lease_ttl": 1.0,
        "tick": 0.1,
        "member_ttl": 0.5,
        "join_grace": 0.0,
        "ask_timeout": 5.0,
        "handoff_timeout": 2.0,
    }
    options.update(overrides)
    return RedisCluster(url, **options)


def owned(rt: Runtime) -> list[int]:
    return list(rt.stats()["cluster"]["shards_owned"])


async def test_a_message_handled_on_another_node_is_in_the_sender_s_trace(
    spans: Spans, redis_url: str
) -> None:
    async with (
        traced(spans, cluster=cluster(redis_url)) as a,
        traced(spans, cluster=cluster(redis_url)) as b,
    ):
        await until(lambda: len(owned(a)) + len(owned(b)) == SHARDS)
        runner, sender = (a, b) if owned(a) else (b, a)  # one owns them all: 2 in 2**15
        key = next(f"k{i}" for i in range(1000) if shard_of(f"k{i}", SHARDS) in owned(runner))
        with spans.tracer.start_as_current_span("webhook") as webhook:
            assert await sender.ask(key, "across") == "across"
        assert runner._core is not None
        assert key in runner._core.cells  # the other node ran it
        span = spans.of("across")
        assert (span.context.trace_id, parent_of(span)) == ids(webhook)


async def test_a_sender_only_process_starts_the_trace(spans: Spans, redis_url: str) -> None:
    async with (
        traced(spans, cluster=cluster(redis_url)) as node,
        traced(spans, cluster=cluster(redis_url, role="sender")) as front,
    ):
        await until(lambda: len(owned(node)) == SHARDS)
        with spans.tracer.start_as_current_span("webhook") as webhook:
            await front.send("k", "from the front")
        await until(lambda: "from the front" in [m for m, _ in SEEN])
        await settle(node)
        span = spans.of("from the front")
        assert (span.context.trace_id, parent_of(span)) == ids(webhook)
