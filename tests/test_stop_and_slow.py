"""The Runtime facade's edges: `stop()` waited for by several callers, cancelled, or
called from a handler; a second start; an interrupt that could never interrupt; and
handlers that never return (`slow_handler`)."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors import (
    AlreadyStarted,
    Context,
    InvalidPriority,
    RuntimeStopped,
    StopFromHandler,
    UserActor,
)
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import RestartPolicy, Runtime, ShutdownSummary
from tests.helpers import in_flight, named, running, settle

pytestmark = pytest.mark.timeout(30)


class Gated(UserActor):
    """Handles "hold" once `gate` is set; anything else at once."""

    gate: asyncio.Event

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "hold":
            await Gated.gate.wait()
        return message


@pytest.fixture(autouse=True)
def _gate() -> None:
    Gated.gate = asyncio.Event()


async def waiting(task: asyncio.Task[Any]) -> None:
    """Let `task` reach its first await (bounded: never a timed sleep)."""
    for _ in range(100):
        await asyncio.sleep(0)
        coro: Any = task.get_coro()
        if coro.cr_await is not None:
            return
    raise AssertionError("the task never waited")


# -- stop(): one shutdown, a wait per caller --------------------------------------------


async def test_a_cancelled_wait_for_the_stop_cancels_only_that_wait() -> None:
    """A caller gives up waiting for the stop (its task is cancelled, as by wait_for):
    the stop goes on; a second stop() then waits for it and returns the summary, and
    leaving `async with` afterwards is clean (it raised CancelledError, and so did
    asyncio.run)."""
    async with Runtime(Gated) as rt:
        held = rt.ask("k", "hold")
        await in_flight(rt, 1)
        first = asyncio.ensure_future(_await(rt.stop(timeout=5)))
        await waiting(first)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert rt.stats()["state"] == "stopping"  # the stop itself went on
        Gated.gate.set()
        summary = await rt.stop()
        assert isinstance(summary, ShutdownSummary)
        assert summary.drained
        assert summary.handled == 1
        assert await held == "hold"
    # Leaving the block waited for the same stop, without a CancelledError.
    assert rt.stats()["state"] == "stopped"


async def _await(future: Any) -> Any:
    return await future


async def test_stop_waited_for_by_several_tasks_one_of_them_cancelled() -> None:
    """Three tasks wait for the stop at once; one is cancelled: the other two get the one
    summary, the cancelled one only its own CancelledError."""
    rt = await Runtime(Gated).start()
    rt.tell("k", "hold")
    await in_flight(rt, 1)
    tasks = [asyncio.ensure_future(_await(rt.stop(timeout=5))) for _ in range(3)]
    for task in tasks:
        await waiting(task)
    tasks[1].cancel()
    Gated.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[0], ShutdownSummary)
    assert results[0] is results[2]
    assert results[0].handled == 1
    assert await rt.stop() is results[0]


@pytest.mark.parametrize("running", [False, True], ids=["before-it-ran", "while-draining"])
async def test_a_loop_torn_down_under_the_stop_still_gives_its_waiters_a_summary(
    running: bool,
) -> None:
    """The stop's own task is cancelled (asyncio.run returning while the stop runs cancels
    every task), before its first step or while it drains: the runtime settles everything
    at once, and whoever waits for the stop gets that summary, not a CancelledError."""
    rt = await Runtime(Gated).start()
    held = rt.ask("k", "hold")
    await in_flight(rt, 1)
    waiter = rt.stop(timeout=30)
    [stop_task] = [t for t in asyncio.all_tasks() if t.get_name() == "inorder-stop"]
    if running:
        await waiting(stop_task)
    stop_task.cancel()
    summary = await waiter
    assert isinstance(summary, ShutdownSummary)
    assert summary.interrupted_on_stop == 1
    assert rt.stats()["state"] == "stopped"
    assert held.done()
    assert isinstance(await rt.stop(), ShutdownSummary)


# -- stop() from a handler ---------------------------------------------------------------


class Admin(UserActor):
    """An admin `/shutdown`: stops its own runtime, waiting for it or not."""

    runtime: Runtime
    blocking = False

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "/shutdown":
            self.runtime.stop(timeout=5)
            return "stopping"
        if message == "/shutdown and wait":
            try:
                await self.runtime.stop(timeout=5)
            except StopFromHandler as exc:
                return f"refused: {exc}"
            return "waited"
        return message


class BlockingAdmin(UserActor):
    """The same in a blocking handler, on a pool thread."""

    runtime: Runtime
    blocking = True

    def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "/shutdown":
            self.runtime.stop(timeout=5)
            return "stopping"
        if message == "/shutdown and wait":
            try:
                self.runtime.stop(timeout=5).get(timeout=10)
            except StopFromHandler as exc:
                return f"refused: {exc}"
            return "waited"
        return message


def _bind(cls: type[Admin | BlockingAdmin], rt: Runtime) -> Runtime:
    cls.runtime = rt
    return rt


@pytest.mark.parametrize("cls", [Admin, BlockingAdmin])
async def test_a_handler_that_stops_its_runtime(cls: type[Admin]) -> None:
    """`rt.stop()` in a handler (async, or blocking on a pool thread) begins the stop and
    returns; the handler's own turn is part of the drain (its answer arrives), what waits
    behind it is drained too, and the stop ends drained, well before its timeout."""
    rt = await _bind(cls, Runtime(cls)).start()
    answer = rt.ask("admin", "/shutdown")
    later = rt.ask("admin", "after")
    other = rt.ask("user", "hello")
    summary = await asyncio.wait_for(_await(rt.stop()), 10)
    assert await answer == "stopping"
    assert (await later, await other) == ("after", "hello")
    assert summary.drained
    assert (summary.handled, summary.dropped_on_stop) == (3, 0)
    with pytest.raises(RuntimeStopped):
        rt.tell("admin", "x")


@pytest.mark.parametrize("cls", [Admin, BlockingAdmin])
async def test_a_handler_that_waits_for_its_own_stop_gets_a_clear_error(
    cls: type[Admin],
) -> None:
    """`await rt.stop()` (or `.get()` on a pool thread) in a handler would wait for itself:
    it raises StopFromHandler at once, the stop begun by that call goes on, drains, and
    ends well before its timeout (it used to wait the whole drain timeout for the handler,
    then cancel it, and the cancellation reached every other waiter of the stop)."""
    with capture_logs() as logs:
        rt = await _bind(cls, Runtime(cls)).start()
        answer = rt.ask("admin", "/shutdown and wait")
        summary = await asyncio.wait_for(_await(rt.stop()), 10)
    text = await answer
    assert text.startswith("refused: a handler (or on_start/on_stop) cannot wait")
    assert "without awaiting" in text
    assert summary.drained
    assert (summary.handled, summary.interrupted_on_stop) == (1, 0)
    assert named(logs, "handler_abandoned") == []


async def test_an_uncaught_stop_from_handler_fails_only_that_message() -> None:
    """A handler that awaits its own stop without catching the error: that message fails
    with StopFromHandler (the asker sees it), the stop still completes drained, and
    `async with` exits cleanly."""

    class Careless(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            await rt.stop(timeout=5)

    async with Runtime(Careless, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
        with pytest.raises(StopFromHandler):
            await rt.ask("admin", "/shutdown")
        summary = await rt.stop()
    assert summary.drained
    assert summary.failed == 1


async def test_on_stop_that_waits_for_the_stop_gets_the_error_too() -> None:
    """A hook runs inside the shutdown as well: waiting for it there raises too."""
    seen: list[str] = []

    class Hook(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            return message

        async def on_stop(self, reason: str) -> None:
            try:
                await rt.stop()
            except StopFromHandler:
                seen.append(reason)

    async with Runtime(Hook) as rt:
        await rt.ask("k", 1)
    assert seen == ["shutdown"]


def test_stop_from_a_handler_of_a_background_runtime() -> None:
    """`with Runtime(...)` from sync code: a handler (async on the runtime's loop, blocking
    on its pool) stops the runtime; the calling thread gets the summary from stop() and
    leaves the block cleanly; a blocking handler waiting for the stop gets the error."""
    for cls in (Admin, BlockingAdmin):
        rt = _bind(cls, Runtime(cls))
        with rt:
            assert rt.ask("admin", "/shutdown").get(timeout=10) == "stopping"
            summary = rt.stop().get(timeout=10)
            assert summary.drained
            assert summary.handled == 1
        assert rt.stats()["state"] == "stopped"
    rt = _bind(BlockingAdmin, Runtime(BlockingAdmin))
    with rt:
        answer = rt.ask("admin", "/shutdown and wait").get(timeout=10)
        assert answer.startswith("refused: ")
        assert rt.stop().get(timeout=10).drained


def test_stop_from_another_thread_while_a_wait_on_the_loop_was_cancelled() -> None:
    """Background runtime: a thread's `.get(timeout=)` that times out leaves the stop
    going; the next `.get()` returns its summary."""
    rt = Runtime(Gated)
    with rt:
        loop = rt._loop
        assert loop is not None
        ready = threading.Event()

        def make_gate() -> None:
            Gated.gate = asyncio.Event()
            ready.set()

        loop.call_soon_threadsafe(make_gate)
        ready.wait(5)
        held = rt.ask("k", "hold")
        with pytest.raises(TimeoutError):
            rt.stop(timeout=5).get(timeout=0.05)
        loop.call_soon_threadsafe(Gated.gate.set)
        summary = rt.stop().get(timeout=10)
        assert held.get(timeout=5) == "hold"
        assert summary.drained


# -- a runtime starts once -----------------------------------------------------------------


async def test_a_second_start_raises_already_started() -> None:
    """A second start of a running runtime, or of a stopped one, raises AlreadyStarted
    (a RuntimeError and an InorderError, not RuntimeStopped), saying which; the running
    runtime goes on working, and `with rt:` on it starts no thread."""
    rt = await Runtime(Gated).start()
    with pytest.raises(AlreadyStarted, match="already running"):
        await rt.start()
    with pytest.raises(AlreadyStarted, match="already running"):
        async with rt:
            pass
    with pytest.raises(AlreadyStarted, match="already running"):
        rt.__enter__()
    assert rt._thread is None
    assert await rt.ask("k", "still") == "still"
    await rt.stop()
    with pytest.raises(AlreadyStarted, match="is stopped: a runtime starts once; create a new"):
        await rt.start()
    error = AlreadyStarted("x")
    assert isinstance(error, RuntimeError)
    assert not isinstance(error, RuntimeStopped)


# -- interrupt=True needs a priority ----------------------------------------------------------


async def test_interrupt_at_priority_0_is_refused_at_the_call_site() -> None:
    """interrupt=True without a priority (0, the lowest) could never interrupt anything:
    InvalidPriority (a ValueError) at the call, on the loop, from another thread and from a
    handler's ctx.tell, nothing accepted; priority 1 interrupts as documented."""
    told: list[str] = []

    class Teller(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "tell":
                try:
                    ctx.tell("other", "/stop", interrupt=True)
                except InvalidPriority as exc:
                    told.append(str(exc))
                return None
            if message == "hold":
                await Gated.gate.wait()
            return message

    async with running(Teller) as rt:
        for call in (rt.tell, rt.ask):
            with pytest.raises(InvalidPriority, match="priority >= 1"):
                call("k", "/stop", interrupt=True)
            error = await asyncio.to_thread(_raised, call, "k", "/stop", interrupt=True)
            assert isinstance(error, InvalidPriority)
            assert isinstance(error, ValueError)
        with pytest.raises(InvalidPriority):
            await rt.send("k", "/stop", interrupt=True)
        assert rt.stats()["accepted"] == 0
        await rt.ask("k", "tell")
        assert len(told) == 1
        assert "could never interrupt anything" in told[0]
        assert rt.stats()["accepted"] == 1
        held = rt.ask("k", "hold")
        await in_flight(rt, 1)
        assert await rt.ask("k", "/stop", priority=1, interrupt=True) == "/stop"
        assert held.done()
        assert rt.stats()["interrupted"] == 1


def _raised(call: Any, *args: Any, **kwargs: Any) -> BaseException | None:
    try:
        call(*args, **kwargs)
    except BaseException as exc:
        return exc
    return None


async def test_interrupt_at_priority_0_is_refused_before_reaching_redis(redis_url: str) -> None:
    """Cluster mode: the interrupt is applied on the shard's owner, but the check is at the
    call site: nothing is sent."""
    from supervisors import RedisCluster

    cluster = RedisCluster(redis_url, n_shards=4, lease_ttl=1.0, tick=0.1, join_grace=0.0)
    async with Runtime(Gated, cluster=cluster, idle_timeout=None) as rt:
        with pytest.raises(InvalidPriority):
            rt.tell("k", "/stop", interrupt=True)
        error = await asyncio.to_thread(_raised, rt.ask, "k", "/stop", interrupt=True)
        assert isinstance(error, InvalidPriority)
        assert rt.stats()["cluster"]["sent"] == 0
        assert await rt.ask("k", "ok", priority=1, interrupt=True) == "ok"


# -- slow handlers -------------------------------------------------------------------------------


class Hang(UserActor):
    """ "hang" waits until `release` is set; anything else returns at once."""

    release: asyncio.Event

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "hang":
            await Hang.release.wait()
        return message


@pytest.fixture(name="release")
def _release() -> asyncio.Event:
    Hang.release = asyncio.Event()
    return Hang.release


async def test_a_handler_that_never_returns_is_logged_once_and_listed(
    clock: FakeClock, release: asyncio.Event
) -> None:
    """With handler_timeout off (the default), a handler running 60 s (the default
    slow_handler) gets one WARNING `handler_slow` (key, running_s, incarnation) at exactly
    60 s, none later for the same message, and stats()["running_by_key"] lists it; a
    second key's handler, started 3 s later, is reported at exactly 63 s."""
    with capture_logs() as logs:
        rt = await Runtime(Hang, clock=clock, idle_timeout=None).start()
        try:
            first = rt.ask("k1", "hang")
            await clock.advance(3.0)
            second = rt.ask("k2", "hang")
            await clock.advance(60.0 - 3.0 - 0.001)
            assert named(logs, "handler_slow") == []
            await clock.advance(0.001)
            [slow] = named(logs, "handler_slow")
            assert (slow["log_level"], slow["key"], slow["incarnation"]) == ("warning", "k1", 1)
            assert slow["running_s"] == 60.0
            await clock.advance(3.0 - 0.001)
            assert len(named(logs, "handler_slow")) == 1
            await clock.advance(0.001)
            assert [(e["key"], e["running_s"]) for e in named(logs, "handler_slow")] == [
                ("k1", 60.0),
                ("k2", 60.0),
            ]
            await clock.advance(600.0)
            assert len(named(logs, "handler_slow")) == 2  # once per message
            stats = rt.stats()
            assert stats["running_by_key"] == {"k1": 663.0, "k2": 660.0}
            assert stats["in_flight"] == 2
            release.set()
            assert (await first, await second) == ("hang", "hang")
            await rt.wait_idle()
            assert rt.stats()["running_by_key"] == {}
            assert clock.pending_timers() == []  # nothing runs: no check is armed
            # The same key's next message that hangs is reported again: once per message.
            release.clear()
            third = rt.ask("k1", "hang")
            await clock.advance(60.0)
            assert [e["key"] for e in named(logs, "handler_slow")] == ["k1", "k2", "k1"]
            release.set()
            assert await third == "hang"
        finally:
            await rt.stop()


async def test_slow_handler_is_an_option(clock: FakeClock, release: asyncio.Event) -> None:
    """`slow_handler=` sets the threshold (a blocking handler in the pool counts too),
    `None` turns the check off; bad values fail at construction."""

    class BlockingHang(UserActor):
        blocking = True
        event = threading.Event()

        def on_message(self, message: Any, ctx: Context) -> Any:
            BlockingHang.event.wait(10)
            return message

    with capture_logs() as logs:
        async with Runtime(BlockingHang, clock=clock, slow_handler=2.5) as rt:
            answer = rt.ask("pool", "x")
            await in_flight(rt, 1)
            await clock.advance(2.5)
            [slow] = named(logs, "handler_slow")
            assert (slow["key"], slow["running_s"]) == ("pool", 2.5)
            BlockingHang.event.set()
            assert await answer == "x"
    with capture_logs() as logs:
        async with Runtime(Hang, clock=clock, slow_handler=None) as rt:
            answer = rt.ask("k", "hang")
            await clock.advance(10_000.0)
            assert named(logs, "handler_slow") == []
            assert rt.stats()["running_by_key"] == {"k": 10_000.0}  # listed all the same
            release.set()
            await answer
    for bad in (0, -1.0, True, "60", math.inf, math.nan):
        with pytest.raises(ValueError, match="slow_handler"):
            Runtime(Hang, slow_handler=bad)  # type: ignore[arg-type]


async def test_a_handler_timeout_shorter_than_slow_handler_leaves_it_to_the_timeout(
    clock: FakeClock, release: asyncio.Event
) -> None:
    """With a handler_timeout not longer than slow_handler, the timeout settles every
    handler first (and `handler_overran` reports one that ignores it): no slow check."""
    restart = RestartPolicy(handler_timeout=5.0, backoff_min=0, jitter=0)
    with capture_logs() as logs:
        async with Runtime(Hang, clock=clock, restart=restart, slow_handler=5.0) as rt:
            answer = rt.ask("k", "hang")
            await in_flight(rt, 1)
            assert clock.pending_timers() == [5.0]  # the timeout's, and no other
            await clock.advance(100.0)
            assert answer.done()
    assert named(logs, "handler_slow") == []


class _CountingClock:
    """A FakeClock that counts the timers armed through it."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner
        self.armed = 0

    def now(self) -> float:
        return self.inner.now()

    def call_at(self, when: float, callback: Any, *args: Any) -> Any:
        self.armed += 1
        return self.inner.call_at(when, callback, *args)


class Noop(UserActor):
    def on_message(self, message: Any, ctx: Context) -> Any:
        return message


@pytest.mark.parametrize("slow_handler", [60.0, None])
async def test_the_slow_check_costs_no_timer_per_message(
    clock: FakeClock, slow_handler: float | None
) -> None:
    """The slow check arms one timer per busy period (from the first task started to the
    last one ended), never one per message: 2,000 messages to 200 keys at once cost at
    most one timer, none when it is off (and none per message either way)."""
    counting = _CountingClock(clock)
    async with Runtime(Noop, clock=counting, idle_timeout=None, slow_handler=slow_handler) as rt:
        for n in range(2_000):
            rt.tell(f"user:{n % 200}", n)
        await settle(rt)
        assert rt.stats()["handled"] == 2_000
        assert counting.armed == (1 if slow_handler is not None else 0)
        assert clock.pending_timers() == []
    counting = _CountingClock(clock)
    restart = RestartPolicy(handler_timeout=30.0)
    async with Runtime(Noop, clock=counting, idle_timeout=None, restart=restart) as rt:
        for n in range(100):
            rt.tell("k", n)
        await settle(rt)
        assert counting.armed == 100  # the timeout's own timer per message, nothing more


async def test_running_by_key_is_bounded_and_longest_first(
    clock: FakeClock, release: asyncio.Event
) -> None:
    """25 stuck keys, started a second apart: running_by_key holds the 20 longest."""
    async with Runtime(Hang, clock=clock, idle_timeout=None) as rt:
        answers = []
        for n in range(25):
            answers.append(rt.ask(f"user:{n}", "hang"))
            await clock.advance(1.0)
        await wait_all_tasks_blocked()
        running_by_key = rt.stats()["running_by_key"]
        assert list(running_by_key.items()) == [(f"user:{n}", 25.0 - n) for n in range(20)]
        release.set()
        await asyncio.gather(*answers)
