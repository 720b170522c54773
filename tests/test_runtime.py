"""The Runtime facade: one at a time (G2), bad input (G9), shutdown (G10), threads, stats."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from actors import (
    AlreadyStarted,
    Context,
    Dropped,
    Interrupted,
    InvalidKey,
    InvalidPriority,
    MailboxFull,
    RuntimeStopped,
    UserActor,
)
from supervisors import RestartPolicy, Runtime
from supervisors._ingress import Ingress


class Recorder(UserActor):
    """Records what it handles; optionally waits on a per-message gate."""

    seen: list[tuple[Any, Any]] = []
    gates: dict[Any, asyncio.Event] = {}
    active: dict[Any, int] = {}
    overlaps: list[Any] = []

    async def on_message(self, message: Any, ctx: Context) -> Any:
        active = Recorder.active
        active[ctx.key] = active.get(ctx.key, 0) + 1
        if active[ctx.key] > 1:
            Recorder.overlaps.append(ctx.key)
        try:
            gate = Recorder.gates.get(message)
            if gate is not None:
                await gate.wait()
            else:
                await asyncio.sleep(0)
            Recorder.seen.append((ctx.key, message))
            if message == "boom":
                raise ValueError("boom")
            return message
        finally:
            active[ctx.key] -= 1


async def in_flight(rt: Runtime, n: int) -> None:
    """Yield to the loop until `n` handlers are running (bounded, never a timed sleep)."""
    for _ in range(1000):
        if rt.stats()["in_flight"] >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never saw {n} handlers in flight")


@pytest.fixture(autouse=True)
def _reset_recorder() -> None:
    Recorder.seen = []
    Recorder.gates = {}
    Recorder.active = {}
    Recorder.overlaps = []


class TestBasics:
    async def test_each_key_in_order_and_keys_independent(self) -> None:
        """Messages of one key are handled in order; a slow key does not hold up another."""
        Recorder.gates["slow"] = gate = asyncio.Event()
        async with Runtime(Recorder) as rt:
            rt.tell("a", "slow")
            for i in range(5):
                rt.tell("a", i)
                rt.tell("b", i)
            await asyncio.wait_for(rt.ask("b", "last"), 5)

            assert [m for k, m in Recorder.seen if k == "b"] == [0, 1, 2, 3, 4, "last"]
            assert [m for k, m in Recorder.seen if k == "a"] == []
            gate.set()
            await rt.wait_idle()

        assert [m for k, m in Recorder.seen if k == "a"] == ["slow", 0, 1, 2, 3, 4]

    async def test_tell_returns_none_and_ask_returns_the_result(self) -> None:
        """tell is fire-and-forget; ask's future resolves to on_message's return value."""
        async with Runtime(Recorder) as rt:
            assert rt.tell("k", 1) is None
            assert await rt.ask("k", 2) == 2

    async def test_handler_exception_reaches_the_asker(self) -> None:
        """A failing handler fails its own message; the next message is handled."""
        async with Runtime(Recorder, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
            with pytest.raises(ValueError, match="boom"):
                await rt.ask("k", "boom")
            assert await rt.ask("k", "after") == "after"

    async def test_context_fields(self) -> None:
        """ctx carries the key, priority, attempt, the interrupt flag and a bound logger."""
        seen: dict[str, Any] = {}

        class Probe(UserActor):
            def on_message(self, message: Any, ctx: Context) -> Any:
                seen.update(
                    key=ctx.key,
                    priority=ctx.priority,
                    attempt=ctx.attempt,
                    interrupted=ctx.interrupted,
                    log=ctx.log,
                    me=self.key,
                )

        async with Runtime(Probe) as rt:
            await rt.ask(7, "x", priority=3)

        assert (seen["key"], seen["priority"], seen["attempt"], seen["interrupted"]) == (
            7,
            3,
            1,
            False,
        )
        assert seen["me"] == 7
        assert seen["log"]._context == {"key": 7}

    async def test_ctx_tell_reaches_another_user(self) -> None:
        """A handler can tell another user through its context."""

        class Relay(UserActor):
            async def on_message(self, message: Any, ctx: Context) -> Any:
                if ctx.key == "a":
                    ctx.tell("b", message + 1)
                else:
                    Recorder.seen.append((ctx.key, message))

        async with Runtime(Relay) as rt:
            rt.tell("a", 1)
            await rt.wait_idle()

        assert Recorder.seen == [("b", 2)]

    async def test_factory_callable(self) -> None:
        """Any callable key -> UserActor works as the factory."""
        made: list[Any] = []

        def factory(key: Any) -> Recorder:
            made.append(key)
            return Recorder(key)

        async with Runtime(factory) as rt:
            await rt.ask("x", 1)

        assert made == ["x"]


class TestOneAtATime:
    async def test_never_two_handlers_of_one_key(self) -> None:
        """G2: with many messages and awaits, at most one handler of a key runs at a time."""
        async with Runtime(Recorder) as rt:
            for i in range(200):
                rt.tell(f"k{i % 3}", i)
            await rt.wait_idle()

        assert Recorder.overlaps == []
        assert len(Recorder.seen) == 200

    async def test_blocking_handlers_run_in_threads_one_at_a_time(self) -> None:
        """blocking = True: handlers run off the loop, still one at a time per key."""
        lock = threading.Lock()
        active: dict[Any, int] = {}
        overlaps: list[Any] = []
        threads: set[int] = set()

        class Blocking(UserActor):
            blocking = True

            def on_message(self, message: Any, ctx: Context) -> Any:
                with lock:
                    active[ctx.key] = active.get(ctx.key, 0) + 1
                    if active[ctx.key] > 1:
                        overlaps.append(ctx.key)
                    threads.add(threading.get_ident())
                time.sleep(0.001)
                with lock:
                    active[ctx.key] -= 1
                return message

        async with Runtime(Blocking, max_workers=4) as rt:
            futures = [rt.ask(f"k{i % 2}", i) for i in range(20)]
            results = await asyncio.gather(*futures)

        assert results == list(range(20))
        assert overlaps == []
        assert threading.get_ident() not in threads

    async def test_loop_stays_responsive_during_a_blocking_handler(self) -> None:
        """A blocking handler does not freeze the loop: other keys go on meanwhile."""
        release = threading.Event()

        class Blocking(UserActor):
            blocking = True

            def on_message(self, message: Any, ctx: Context) -> Any:
                if message == "wait":
                    release.wait(5)
                return message

        async with Runtime(Blocking) as rt:
            slow = rt.ask("slow", "wait")
            assert await rt.ask("fast", "hi") == "hi"
            release.set()
            assert await slow == "wait"


class TestBadInput:
    @pytest.mark.parametrize("key", ["", None, True, 1.5, b"bytes", ("t", 1), []])
    async def test_bad_keys_raise_at_the_call_site(self, key: Any) -> None:
        """G9: empty, None, bool and non-str/int keys raise InvalidKey; the runtime goes on."""
        async with Runtime(Recorder) as rt:
            with pytest.raises(InvalidKey):
                rt.tell(key, "x")
            with pytest.raises(InvalidKey):
                rt.ask(key, "x")
            assert await rt.ask("ok", 1) == 1
            assert rt.stats()["accepted"] == 1

    @pytest.mark.parametrize("priority", [-1, 1.0, "high", None, True])
    async def test_bad_priorities_raise_at_the_call_site(self, priority: Any) -> None:
        """G9: a priority that is not an int >= 0 raises InvalidPriority; nothing is enqueued."""
        async with Runtime(Recorder) as rt:
            with pytest.raises(InvalidPriority):
                rt.tell("k", "x", priority=priority)
            assert rt.stats()["accepted"] == 0

    async def test_bool_key_does_not_alias_int_key(self) -> None:
        """True == 1 in Python; the runtime still refuses True rather than routing it to key 1."""
        async with Runtime(Recorder) as rt:
            await rt.ask(1, "one")
            with pytest.raises(InvalidKey):
                rt.tell(True, "x")

    async def test_mailbox_full_rejects_and_enqueues_nothing(self) -> None:
        """G8/issue: at max_pending waiting messages, tell raises MailboxFull; the rest is kept."""
        Recorder.gates["hold"] = gate = asyncio.Event()
        async with Runtime(Recorder, max_pending=3) as rt:
            rt.tell("k", "hold")
            await in_flight(rt, 1)  # the message in flight does not count
            for i in range(3):
                rt.tell("k", i)
            with pytest.raises(MailboxFull):
                rt.tell("k", "overflow")
            with pytest.raises(MailboxFull):
                rt.ask("k", "overflow")
            assert rt.pending("k") == 3
            gate.set()
            await rt.wait_idle()

        assert [m for _, m in Recorder.seen] == ["hold", 0, 1, 2]

    async def test_runtime_wide_bound(self) -> None:
        """max_total_pending bounds the waiting messages of all keys together."""
        Recorder.gates["hold"] = gate = asyncio.Event()
        async with Runtime(Recorder, max_total_pending=2) as rt:
            rt.tell("a", "hold")
            await in_flight(rt, 1)
            rt.tell("a", 1)
            rt.tell("b", 1)
            with pytest.raises(MailboxFull) as info:
                rt.tell("c", 1)
            assert info.value.scope == "runtime"
            assert rt.stats()["known_keys"] == 2
            gate.set()

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("max_pending", 0),
            ("max_pending", 1.5),
            ("idle_timeout", 0),
            ("idle_timeout", -1),
            ("max_active", 0),
            ("batch", 0),
            ("max_total_pending", -5),
        ],
    )
    def test_bad_options_are_rejected_at_construction(self, option: str, value: Any) -> None:
        """Nonsensical options fail when the Runtime is built, naming the option."""
        with pytest.raises(ValueError, match=option):
            Runtime(Recorder, **{option: value})

    def test_actor_class_without_on_message_is_rejected_at_construction(self) -> None:
        """A UserActor subclass that forgot on_message fails when the Runtime is built."""

        class Forgetful(UserActor):
            pass

        with pytest.raises(TypeError, match="Forgetful must implement on_message"):
            Runtime(Forgetful)

    def test_factory_must_be_callable(self) -> None:
        """A non-callable factory is a TypeError at construction."""
        with pytest.raises(TypeError, match="actor_factory"):
            Runtime("Recorder")  # type: ignore[arg-type]

    async def test_calls_on_a_stopped_runtime_raise(self) -> None:
        """G9: tell/ask after stop raise RuntimeStopped; stop is idempotent; a second start
        raises AlreadyStarted."""
        rt = Runtime(Recorder)
        with pytest.raises(RuntimeStopped):
            rt.tell("k", 1)
        await rt.start()
        first = await rt.stop()
        second = await rt.stop()

        assert first is second
        with pytest.raises(RuntimeStopped):
            rt.tell("k", 1)
        with pytest.raises(RuntimeStopped):
            rt.ask("k", 1)
        with pytest.raises(AlreadyStarted, match="is stopped: a runtime starts once"):
            await rt.start()

    async def test_factory_returning_a_non_actor_is_a_failure_not_a_crash(self) -> None:
        """A factory that returns garbage fails the key (after the restart budget), loudly."""
        async with Runtime(
            lambda key: object(),  # type: ignore[arg-type,return-value]
            restart=RestartPolicy(max_restarts=1, backoff_min=0, jitter=0),
        ) as rt:
            fut = rt.ask("k", 1)
            with pytest.raises(Dropped) as info:
                await asyncio.wait_for(fut, 5)
            assert info.value.reason == "gave_up"
            assert rt.stats()["gave_up"] == 1


class TestShutdown:
    async def test_drain_handles_what_waits(self) -> None:
        """G10: stop(drain=True) handles the waiting messages, then stops every actor."""
        stops: list[tuple[Any, str]] = []

        class Bot(Recorder):
            def on_stop(self, reason: str) -> None:
                stops.append((self.key, reason))

        rt = await Runtime(Bot).start()
        for i in range(10):
            rt.tell(f"k{i % 2}", i)
        summary = await rt.stop(drain=True, timeout=5)

        assert summary.drained
        assert summary.handled == 10
        assert summary.dropped_on_stop == 0
        assert sorted(stops) == [("k0", "shutdown"), ("k1", "shutdown")]
        assert summary.actors_stopped == 2

    async def test_timeout_drops_the_rest_and_interrupts_the_one_in_flight(self) -> None:
        """Past the drain timeout, waiting messages end Dropped("shutdown") and the one in
        flight ends Interrupted("shutdown")."""
        Recorder.gates["hang"] = asyncio.Event()  # never set
        rt = await Runtime(Recorder).start()
        hanging = rt.ask("k", "hang")
        waiting = [rt.ask("k", i) for i in range(3)]
        summary = await rt.stop(drain=True, timeout=0.05)

        assert not summary.drained
        assert summary.dropped_on_stop == 3
        assert summary.interrupted_on_stop == 1
        with pytest.raises(Interrupted) as info:
            await hanging
        assert info.value.reason == "shutdown"
        for fut in waiting:
            with pytest.raises(Dropped) as dropped:
                await fut
            assert dropped.value.reason == "shutdown"
        assert summary.accepted == summary.handled + summary.failed + summary.interrupted + (
            summary.dropped
        )

    async def test_no_drain_drops_at_once(self) -> None:
        """stop(drain=False) does not handle what waits."""
        Recorder.gates["hold"] = asyncio.Event()
        rt = await Runtime(Recorder).start()
        rt.tell("k", "hold")
        for i in range(5):
            rt.tell("k", i)
        await asyncio.sleep(0)
        summary = await rt.stop(drain=False)

        assert summary.dropped_on_stop == 5
        assert Recorder.seen == []
        assert len(rt.dead_letters()) == 5

    async def test_stop_waits_for_a_blocking_handler_and_flags_it(self) -> None:
        """A blocking handler cannot be cancelled: it sees ctx.interrupted and is waited for."""
        started = threading.Event()
        flagged: list[bool] = []

        class Blocking(UserActor):
            blocking = True

            def on_message(self, message: Any, ctx: Context) -> Any:
                started.set()
                deadline = time.monotonic() + 5
                while not ctx.interrupted and time.monotonic() < deadline:
                    time.sleep(0.001)
                flagged.append(ctx.interrupted)

        rt = await Runtime(Blocking).start()
        fut = rt.ask("k", 1)
        await asyncio.to_thread(started.wait, 5)
        summary = await rt.stop(drain=False, timeout=5)

        assert flagged == [True]
        assert summary.interrupted_on_stop == 1
        with pytest.raises(Interrupted):
            await fut


class TestThreads:
    def test_sync_mode_tell_ask_stats(self) -> None:
        """with Runtime(...) runs the loop on a background thread for non-async code."""
        with Runtime(Recorder) as rt:
            for i in range(50):
                rt.tell("t", i)
            assert rt.ask("t", "end").get(timeout=5) == "end"
            stats = rt.stats()

        assert [m for _, m in Recorder.seen] == [*range(50), "end"]
        assert stats["handled"] == 51
        assert stats["live_actors"] == 1

    def test_bad_input_from_a_thread_raises_in_that_thread(self) -> None:
        """Validation happens at the call site, in the calling thread."""
        with Runtime(Recorder) as rt:
            with pytest.raises(InvalidKey):
                rt.tell("", 1)
            with pytest.raises(InvalidPriority):
                rt.ask("k", 1, priority=-1)

    async def test_threads_tell_in_order_through_the_ingress(self) -> None:
        """Each thread's messages keep their order; all of them arrive."""
        async with Runtime(Recorder) as rt:

            def producer(name: str) -> None:
                for i in range(200):
                    rt.tell(name, i)

            await asyncio.gather(*(asyncio.to_thread(producer, f"t{n}") for n in range(4)))
            await rt.wait_idle()
            for n in range(4):
                assert [m for k, m in Recorder.seen if k == f"t{n}"] == list(range(200))

    def test_ingress_wakes_the_loop_once_per_batch(self) -> None:
        """A burst of foreign-thread submissions costs one loop wake-up, not one per message."""

        class CountingLoop:
            def __init__(self) -> None:
                self.scheduled: list[Any] = []

            def call_soon_threadsafe(self, callback: Any) -> None:
                self.scheduled.append(callback)

        received: list[Any] = []

        class Core:  # what the ingress reads of the router, and where it delivers
            transit: dict[Any, int] = {}
            room_waiters: dict[Any, Any] = {}  # no sender waits for room
            cells: dict[Any, Any] = {}
            max_pending = 10_000
            max_total_pending = None
            pending = 0
            accept_submission = received.append

        loop = CountingLoop()
        core = Core()
        ingress = Ingress(loop, core)  # type: ignore[arg-type]
        for i in range(1000):
            ingress.submit("k", i, 0, False, False, None, None, False)

        assert len(loop.scheduled) == 1
        assert len(core.transit["k"]) == 1000  # room reserved
        loop.scheduled.pop()()
        assert [item.message for item in received] == list(range(1000))
        assert core.transit == {}
        ingress.submit("k", "next", 0, False, False, None, None, False)
        assert len(loop.scheduled) == 1

    async def test_ask_from_thread_and_get(self) -> None:
        """A thread's ask().get(timeout) returns the handler's result."""
        async with Runtime(Recorder) as rt:
            result = await asyncio.to_thread(lambda: rt.ask("x", "hello").get(timeout=5))

        assert result == "hello"

    def test_stop_from_a_thread(self) -> None:
        """stop() from another thread returns a future with .get()."""
        rt = Runtime(Recorder)
        rt.__enter__()
        rt.tell("k", 1)
        summary = rt.stop().get(timeout=10)
        rt.__exit__(None, None, None)

        assert summary.handled == 1


class TestIntrospection:
    async def test_stats_shape(self) -> None:
        """stats() has the documented keys and latency summaries."""
        async with Runtime(Recorder) as rt:
            await rt.ask("a", 1)
            stats = rt.stats()

        for key in (
            "live_actors",
            "pending",
            "handled",
            "failed",
            "interrupted",
            "dropped",
            "restarts",
            "dead_letters",
            "accepted",
            "activations",
            "idle_stops",
            "pending_by_key",
        ):
            assert key in stats
        assert stats["wait_ms"]["count"] == 1
        assert set(stats["run_ms"]) == {"count", "p50", "p90", "p99", "max"}

    async def test_dead_letters_callback_and_redeliver(self) -> None:
        """Failed messages are dead-lettered (record + callback) and can be redelivered."""
        letters: list[Any] = []
        fail = {"on": True}

        class Flaky(UserActor):
            def on_message(self, message: Any, ctx: Context) -> Any:
                if fail["on"]:
                    raise RuntimeError("down")
                Recorder.seen.append((ctx.key, message))

        async with Runtime(
            Flaky, on_dead_letter=letters.append, restart=RestartPolicy(backoff_min=0, jitter=0)
        ) as rt:
            rt.tell("k", "important")
            await rt.wait_idle()
            [letter] = rt.dead_letters()
            assert (letter.key, letter.message, letter.reason) == ("k", "important", "failed")
            assert isinstance(letter.error, RuntimeError)
            assert letters == [letter]
            fail["on"] = False
            rt.redeliver(letter)
            await rt.wait_idle()
            assert rt.dead_letters() == []

        assert Recorder.seen == [("k", "important")]

    async def test_a_broken_dead_letter_callback_is_logged_not_fatal(self) -> None:
        """An exception in on_dead_letter does not lose the record or stop the runtime."""

        def broken(_: Any) -> None:
            raise RuntimeError("callback bug")

        async with Runtime(
            Recorder, on_dead_letter=broken, restart=RestartPolicy(backoff_min=0, jitter=0)
        ) as rt:
            with pytest.raises(ValueError, match="boom"):
                await rt.ask("k", "boom")
            assert len(rt.dead_letters()) == 1
            assert await rt.ask("k", 1) == 1
