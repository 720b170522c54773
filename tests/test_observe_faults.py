"""The observers under hostile handlers, written the way a user writes a bot: every
message still gets exactly one span with its outcome, the metrics still add up, and
the admin endpoint keeps answering (or closes cleanly) while the runtime stops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors import (
    Context,
    HandlerCrashed,
    HandlerTimeout,
    Interrupted,
    MailboxFull,
    RuntimeStopped,
    UserActor,
)
from supervisors import RestartPolicy, Runtime
from supervisors.observe import AdminServer, Metrics, Tracing
from tests.helpers import in_flight

pytestmark = pytest.mark.timeout(60)


class Doom(BaseException):
    """Not an Exception: what a handler may raise by mistake (a SystemExit, say)."""


CANCELLED: list[asyncio.Task[Any]] = []


class Hostile(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "base":
            raise Doom("gone")
        if message == "cancelled-elsewhere":
            task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
            CANCELLED.append(task)
            return await task  # other code cancels it
        if message == "stubborn":
            with contextlib.suppress(asyncio.CancelledError):  # swallowed, then returns anyway
                await asyncio.sleep(30)
            return "ignored the interrupt"
        if message == "hog":
            time.sleep(0.3)  # noqa: ASYNC251 -- blocks the loop past the handler_timeout
        if message == "slow":
            await asyncio.sleep(30)
        return message


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def outcomes(exporter: InMemorySpanExporter) -> list[str]:
    return sorted(
        str((s.attributes or {}).get("inorder.outcome"))
        for s in exporter.get_finished_spans()
        if s.name == "inorder.handle"
    )


async def test_every_hostile_run_ends_its_span_and_is_counted(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = exporter
    registry = CollectorRegistry(auto_describe=False)
    rt = Runtime(
        Hostile,
        restart=RestartPolicy(max_retries=0, backoff_min=0.0, handler_timeout=0.1),
        observe=[Tracing(provider), Metrics(registry)],
    )
    async with rt:
        with pytest.raises(HandlerCrashed):
            await rt.ask("a", "base")
        task = rt.ask("b", "cancelled-elsewhere")
        await in_flight(rt, 1)
        for _ in range(100):  # until the handler has made its task (bounded, no timing)
            if CANCELLED:
                break
            await asyncio.sleep(0)
        CANCELLED.pop().cancel()
        with pytest.raises(HandlerCrashed, match="CancelledError"):  # the key's failure
            await task
        stubborn = rt.ask("c", "stubborn")
        await in_flight(rt, 1)
        rt.tell("c", "stop", priority=10, interrupt=True)
        with pytest.raises(Interrupted):
            await stubborn
        with pytest.raises(HandlerTimeout):
            await rt.ask("d", "hog")
        assert await rt.ask("d", "after") == "after"  # the key goes on
        await rt.wait_idle()
        stats = rt.stats()
        text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counted = {s.labels["outcome"]: s.value for s in families["inorder_messages"].samples}
    assert counted == {
        "handled": stats["handled"],
        "failed": stats["failed"],
        "interrupted": stats["interrupted"],
        "dropped": stats["dropped"],
    }
    # One span per run, none left open: every one of them reached the exporter.
    assert sum(counted.values()) == len(outcomes(spans))
    assert outcomes(spans).count("failed") == stats["failed"] >= 3  # base, cancelled, hog
    assert "interrupted" in outcomes(spans)


async def test_a_stop_with_handlers_in_flight_ends_their_spans(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = exporter
    rt = Runtime(Hostile, observe=[Tracing(provider)])
    await rt.start()
    for key in range(5):
        rt.tell(key, "slow")
        rt.tell(key, "behind")  # dropped on stop, never run
    await asyncio.sleep(0.05)
    summary = await rt.stop(drain=False, timeout=0.5)
    assert summary.interrupted_on_stop == 5
    assert outcomes(spans).count("interrupted") == 5
    assert outcomes(spans).count("dropped") == 5


def test_threads_calling_in_while_it_stops_with_every_observer_on(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    _, provider = exporter
    admin = AdminServer(port=0)
    registry = CollectorRegistry(auto_describe=False)
    rt = Runtime(Hostile, observe=[Tracing(provider), Metrics(registry), admin])
    errors: list[BaseException] = []
    with rt:
        stop = threading.Event()

        def tell_until_stopped(n: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    rt.tell(f"thread:{n}", i)
                except MailboxFull:  # backpressure: a producer waits, then goes on
                    time.sleep(0.001)
                    continue
                except RuntimeStopped:  # once it stops: expected
                    return
                except Exception as exc:
                    errors.append(exc)
                    return
                i += 1

        threads = [threading.Thread(target=tell_until_stopped, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        scrape = generate_latest(registry)  # a scrape from another thread, mid-run
        assert b"inorder_messages_total" in scrape
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    stats = rt.stats()
    assert stats["accepted"] == (
        stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
    )
    assert generate_latest(registry) == b""  # unregistered after the stop


async def test_the_endpoint_answers_while_the_runtime_stops() -> None:
    admin = AdminServer(port=0)
    rt = Runtime(Hostile, observe=[admin])
    await rt.start()
    for key in range(20):
        rt.tell(key, "slow")
    stopping = asyncio.ensure_future(rt.stop(drain=True, timeout=0.3))
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(admin.url + "/api/status") as response:
                body = await response.json()
                assert body["state"] in ("running", "stopping", "stopped")
        except aiohttp.ClientConnectionError:
            pass  # the stop closed it first: closed, not hung
    summary = await stopping
    assert summary.interrupted_on_stop == 20
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(admin.url + "/"):
            pass
