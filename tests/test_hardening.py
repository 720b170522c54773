"""Issue 8, items 1-8: no handler, exception, thread or shutdown wedges a key or loses a message.

Black-box tests, written the way a user writes a bot: a stray `CancelledError`, a
`BaseException` from every hook and the factory, `SystemExit`/`KeyboardInterrupt`, a
loop that ended without `stop()`, handlers that swallow cancellation or ignore
`handler_timeout`, stuck threads at shutdown, and `ctx.tell` during the drain. Each test
checks the G4 ledger (handled + failed + interrupted + dropped == accepted once nothing
is pending).

Virtual time (`FakeClock`) wherever the runtime's timers are the point; real time only
where threads or `stop(timeout=...)` bounds are the point, with short waits and generous
bounds (`GRACE` + `SLACK`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

import actors
from actors import Context, Dropped, HandlerTimeout, Interrupted, RuntimeStopped, UserActor
from actors._kernel import LoopActor
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import Directive, RestartPolicy, Runtime, default_decider
from tests.helpers import in_flight, ledger_ok, named, outcomes, policy, running, settle

GRACE = 1.0  # SHUTDOWN_GRACE and OVERRUN_GRACE of the contract
SLACK = 0.5  # scheduling on a loaded 2-core machine
EPS = 0.25  # exactly representable, so virtual times compare exactly
KINDS = ["async", "plain", "blocking"]


class Boom(Exception):
    """An ordinary handler failure."""


class Crash(BaseException):
    """A BaseException that is not an Exception (as some libraries define)."""


CRASHES = [pytest.param(Crash, id="custom_BaseException"), pytest.param(GeneratorExit, id="GE")]
QUITS = [pytest.param(SystemExit, id="SystemExit"), pytest.param(KeyboardInterrupt, id="KI")]


# -- helpers --------------------------------------------------------------------------------


def actor_class(kind: str, handle: Callable[..., Any], base: type[UserActor] = UserActor) -> Any:
    """A `UserActor` whose `on_message` is async, plain or blocking and calls `handle`."""
    if kind == "async":

        class AsyncBot(base):  # type: ignore[valid-type,misc]
            async def on_message(self, message: Any, ctx: Context) -> Any:
                await asyncio.sleep(0)
                return handle(self, message, ctx)

        return AsyncBot
    if kind == "plain":

        class PlainBot(base):  # type: ignore[valid-type,misc]
            def on_message(self, message: Any, ctx: Context) -> Any:
                return handle(self, message, ctx)

        return PlainBot

    class BlockingBot(base):  # type: ignore[valid-type,misc]
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> Any:
            return handle(self, message, ctx)

    return BlockingBot


def run_in_fresh_loop(scenario: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """`asyncio.run(scenario())` on a thread of its own; fail on loop errors or a hang.

    For `SystemExit`/`KeyboardInterrupt` raised by handlers: if the runtime failed to
    contain one, it would end the test's loop (and a `KeyboardInterrupt` would end the
    whole pytest session). Here it ends only this loop, and the test fails.
    """
    box: dict[str, Any] = {}
    loop_errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        return await scenario()

    def target() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as exc:  # reported below, in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="fresh-loop", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the scenario did not finish within {timeout} s"
    error = box.get("error")
    if isinstance(error, SystemExit | KeyboardInterrupt):
        pytest.fail(f"{error!r} escaped the runtime and ended its event loop")
    if error is not None:
        raise error
    assert loop_errors == [], f"the loop reported errors: {loop_errors}"
    return box["result"]


# -- 1. a CancelledError the runtime did not send ---------------------------------------------


async def _typing_task_cancelled_and_awaited() -> None:
    typing = asyncio.create_task(asyncio.Event().wait())  # a "typing..." indicator
    await asyncio.sleep(0)
    typing.cancel()
    await typing  # CancelledError escapes the handler


async def _future_cancelled_by_call_later() -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_later(0.01, future.cancel)  # an HTTP client cancelling its request
    await future


async def _raised() -> None:
    raise asyncio.CancelledError


def _raised_plain() -> None:
    raise asyncio.CancelledError


STRAYS = [
    pytest.param("async", _typing_task_cancelled_and_awaited, id="async-typing_task"),
    pytest.param("async", _future_cancelled_by_call_later, id="async-call_later_cancel"),
    pytest.param("async", _raised, id="async-raise"),
    pytest.param("plain", _raised_plain, id="plain-raise"),
    pytest.param("blocking", _raised_plain, id="blocking-raise"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("kind", "stray"), STRAYS)
async def test_a_stray_cancellation_fails_the_message_and_the_key_goes_on(
    clock: FakeClock, kind: str, stray: Callable[[], Any]
) -> None:
    """Item 1: a CancelledError nobody in the runtime requested is a failure like any
    exception: the ask raises HandlerCrashed (the original as `.error` and `__cause__`),
    the instance is restarted, the key's next message is handled, the stats add up."""
    handled: list[Any] = []

    if kind == "async":

        class Bot(UserActor):
            async def on_message(self, message: Any, ctx: Context) -> Any:
                if message == "stray":
                    await stray()
                handled.append(message)
                return message

    else:

        def handle(actor: UserActor, message: Any, ctx: Context) -> Any:
            if message == "stray":
                stray()
            handled.append(message)
            return message

        Bot = actor_class(kind, handle)

    with capture_logs() as logs:
        async with running(Bot, clock=clock, idle_timeout=None, restart=policy()) as rt:
            first = rt.ask("k", "stray")
            second = rt.ask("k", "next")
            with pytest.raises(actors.HandlerCrashed) as info:
                await asyncio.wait_for(first, 2)
            assert isinstance(info.value.error, asyncio.CancelledError)
            assert info.value.__cause__ is info.value.error
            await settle(rt)
            await clock.advance(1.0)  # the restart backoff
            assert await asyncio.wait_for(second, 2) == "next"
            await settle(rt)
            stats = rt.stats()
            assert outcomes(stats) == (2, 1, 1, 0, 0)
            assert stats["restarts"] == 1
            assert ledger_ok(stats)
            [letter] = rt.dead_letters()
            assert (letter.message, letter.reason) == ("stray", "failed")
            assert isinstance(letter.error, asyncio.CancelledError)
    assert handled == ["next"]
    [failed] = named(logs, "actor_failed")
    assert (failed["phase"], failed["directive"]) == ("on_message", "restart")
    assert "CancelledError" in failed["error"]


async def test_the_decider_sees_the_raw_stray_cancellation(clock: FakeClock) -> None:
    """Item 1: the decider is handed the CancelledError itself; RESUME keeps the instance."""
    seen: list[BaseException] = []
    instances: list[int] = []

    def decider(error: BaseException) -> Directive:
        seen.append(error)
        return Directive.RESUME

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            instances.append(id(self))
            if message == "stray":
                await _typing_task_cancelled_and_awaited()
            return message

    restart = policy(decider=decider)
    async with running(Bot, clock=clock, idle_timeout=None, restart=restart) as rt:
        first = rt.ask("k", "stray")
        second = rt.ask("k", "next")
        with pytest.raises(actors.HandlerCrashed):
            await asyncio.wait_for(first, 2)
        assert await asyncio.wait_for(second, 2) == "next"
        await settle(rt)
        assert ledger_ok(rt.stats())
    assert len(seen) == 1
    assert type(seen[0]) is asyncio.CancelledError
    assert len(set(instances)) == 1


def test_the_default_decider_restarts_on_cancellation_and_escalates_other_base_exceptions() -> None:
    """Item 1/2: RESTART for Exception and CancelledError, ESCALATE for anything else."""
    assert default_decider(Boom()) is Directive.RESTART
    assert default_decider(asyncio.CancelledError()) is Directive.RESTART
    for error in (Crash(), GeneratorExit(), SystemExit(0), KeyboardInterrupt()):
        assert default_decider(error) is Directive.ESCALATE


@pytest.mark.timeout(10)
async def test_a_stray_cancellation_from_on_start_restarts_and_the_message_is_handled(
    clock: FakeClock,
) -> None:
    """Item 1: a CancelledError out of an async on_start is a start failure: the instance is
    restarted after the backoff and the waiting message is handled by the next one."""
    starts: list[int] = []

    class Bot(UserActor):
        async def on_start(self) -> None:
            starts.append(len(starts) + 1)
            if len(starts) == 1:
                await _typing_task_cancelled_and_awaited()

        async def on_message(self, message: Any, ctx: Context) -> Any:
            return message

    with capture_logs() as logs:
        async with running(Bot, clock=clock, idle_timeout=None, restart=policy()) as rt:
            reply = rt.ask("k", "m")
            await settle(rt)
            await clock.advance(1.0)
            assert await asyncio.wait_for(reply, 2) == "m"
            await settle(rt)
            stats = rt.stats()
            assert (stats["actor_failures"], stats["restarts"]) == (1, 1)
            assert outcomes(stats) == (1, 1, 0, 0, 0)
            assert ledger_ok(stats)
    assert starts == [1, 2]
    assert [(e["phase"], e["directive"]) for e in named(logs, "actor_failed")] == [
        ("on_start", "restart")
    ]


@pytest.mark.timeout(10)
async def test_a_stray_cancellation_from_an_async_on_stop_is_reported_and_the_stop_completes(
    clock: FakeClock,
) -> None:
    """Item 1: a CancelledError out of an async on_stop("idle") is a failure (logged and
    counted); the incarnation ends, the entry is released, the key works again."""

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            return message

        async def on_stop(self, reason: str) -> None:
            if reason == "idle":
                await _typing_task_cancelled_and_awaited()

    with capture_logs() as logs:
        async with running(Bot, clock=clock, idle_timeout=10.0, restart=policy()) as rt:
            assert await rt.ask("k", 1) == 1
            await clock.advance(10.0)
            await settle(rt)
            stats = rt.stats()
            assert (stats["live_actors"], stats["known_keys"], stats["actor_failures"]) == (0, 0, 1)
            assert await asyncio.wait_for(rt.ask("k", 2), 2) == 2
    [failed] = named(logs, "actor_failed")
    assert failed["phase"] == "on_stop"
    assert "CancelledError" in failed["error"]


# -- 2. a BaseException that is not an Exception ----------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("crash", CRASHES)
async def test_a_base_exception_from_on_message_stops_only_that_key(
    clock: FakeClock, kind: str, crash: type[BaseException]
) -> None:
    """Item 2: contained as a failure of that key: the ask raises HandlerCrashed, the key's
    waiting messages end Dropped("stopped"), other keys (activated in the same loop turn)
    are handled, and the next message to the key starts a fresh actor."""
    starts: Counter[Any] = Counter()

    class Base(UserActor):
        def on_start(self) -> None:
            starts[self.key] += 1

    def handle(actor: UserActor, message: Any, ctx: Context) -> Any:
        if message == "crash":
            raise crash("on_message")
        return message

    Bot = actor_class(kind, handle, Base)
    async with running(Bot, clock=clock, idle_timeout=None, restart=policy()) as rt:
        crashing = rt.ask("bad", "crash")
        waiting = [rt.ask("bad", f"w{i}") for i in range(2)]
        others = [rt.ask(key, key) for key in ("a", "b")]
        assert await asyncio.wait_for(asyncio.gather(*others), 2) == ["a", "b"]
        with pytest.raises(actors.HandlerCrashed) as info:
            await asyncio.wait_for(crashing, 2)
        assert isinstance(info.value.error, crash)
        for future in waiting:
            with pytest.raises(Dropped) as dropped:
                await asyncio.wait_for(future, 2)
            assert dropped.value.reason == "stopped"
        await settle(rt)
        assert rt.stats()["state"] == "running"
        assert await asyncio.wait_for(rt.ask("bad", "again"), 2) == "again"
        await settle(rt)
        stats = rt.stats()
        assert outcomes(stats) == (6, 3, 1, 0, 2)
        assert ledger_ok(stats)
        letters = rt.dead_letters()
        assert [(d.message, d.reason) for d in letters] == [
            ("crash", "failed"),
            ("w0", "stopped"),
            ("w1", "stopped"),
        ]
        assert isinstance(letters[0].error, crash)
    assert starts == {"bad": 2, "a": 1, "b": 1}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("start_kind", ["async", "plain"])
@pytest.mark.parametrize("crash", CRASHES)
async def test_a_base_exception_from_on_start_stops_only_that_key(
    clock: FakeClock, start_kind: str, crash: type[BaseException]
) -> None:
    """Item 2: on_start raising a BaseException: the key's waiting messages end
    Dropped("stopped"), another key activated in the same turn is handled, the next
    message to the key starts a fresh actor."""
    starts: Counter[Any] = Counter()

    def start(actor: UserActor) -> None:
        starts[actor.key] += 1
        if actor.key == "bad" and starts[actor.key] == 1:
            raise crash("on_start")

    if start_kind == "async":

        class Bot(UserActor):
            async def on_start(self) -> None:
                await asyncio.sleep(0)
                start(self)

            async def on_message(self, message: Any, ctx: Context) -> Any:
                return message

    else:

        class Bot(UserActor):  # type: ignore[no-redef]
            def on_start(self) -> None:
                start(self)

            async def on_message(self, message: Any, ctx: Context) -> Any:
                return message

    async with running(Bot, clock=clock, idle_timeout=None, restart=policy()) as rt:
        waiting = [rt.ask("bad", m) for m in ("m1", "m2")]
        other = rt.ask("good", "hi")
        assert await asyncio.wait_for(other, 2) == "hi"
        for future in waiting:
            with pytest.raises(Dropped) as dropped:
                await asyncio.wait_for(future, 2)
            assert dropped.value.reason == "stopped"
        await settle(rt)
        assert await asyncio.wait_for(rt.ask("bad", "again"), 2) == "again"
        await settle(rt)
        stats = rt.stats()
        assert outcomes(stats) == (4, 2, 0, 0, 2)
        assert stats["actor_failures"] == 1
        assert ledger_ok(stats)
    assert starts == {"bad": 2, "good": 1}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("stop_kind", ["async", "plain"])
@pytest.mark.parametrize("crash", CRASHES)
async def test_a_base_exception_from_on_stop_still_ends_the_incarnation(
    clock: FakeClock, stop_kind: str, crash: type[BaseException]
) -> None:
    """Item 2: on_stop raising a BaseException (on the idle stop, and again at shutdown):
    the incarnation ends anyway, live_actors goes back to 0, the key works again, stop()
    returns normally."""
    stops: list[str] = []

    def stop(reason: str) -> None:
        stops.append(reason)
        raise crash(f"on_stop({reason})")

    if stop_kind == "async":

        class Bot(UserActor):
            async def on_message(self, message: Any, ctx: Context) -> Any:
                return message

            async def on_stop(self, reason: str) -> None:
                await asyncio.sleep(0)
                stop(reason)

    else:

        class Bot(UserActor):  # type: ignore[no-redef]
            async def on_message(self, message: Any, ctx: Context) -> Any:
                return message

            def on_stop(self, reason: str) -> None:
                stop(reason)

    rt = await Runtime(Bot, clock=clock, idle_timeout=10.0, restart=policy()).start()
    assert await asyncio.wait_for(rt.ask("k", 1), 2) == 1
    await clock.advance(10.0)
    await settle(rt)
    stats = rt.stats()
    assert (stats["live_actors"], stats["known_keys"], stats["actor_failures"]) == (0, 0, 1)
    assert await asyncio.wait_for(rt.ask("k", 2), 2) == 2
    summary = await asyncio.wait_for(rt.stop(timeout=2), 5)
    stats = rt.stats()
    assert stats["live_actors"] == 0
    assert stops == ["idle", "shutdown"]
    assert (summary.accepted, summary.handled) == (2, 2)
    assert ledger_ok(stats)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("crash", CRASHES)
async def test_a_base_exception_from_the_factory_hits_only_its_key(
    clock: FakeClock, crash: type[BaseException]
) -> None:
    """Item 2: the factory raising a BaseException for one key: the keys activated in the
    same loop turn are handled, the key's message ends Dropped("stopped"), and its next
    message starts a fresh actor."""
    calls: Counter[Any] = Counter()

    class Echo(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            return message

    def factory(key: str | int) -> UserActor:
        calls[key] += 1
        if key == "bad" and calls[key] == 1:
            raise crash("factory")
        return Echo(key)

    async with running(factory, clock=clock, idle_timeout=None, restart=policy()) as rt:
        # One loop turn: the three keys are activated by one supervisor message.
        before = rt.ask("a", "a")
        bad = rt.ask("bad", "x")
        after = rt.ask("b", "b")
        assert await asyncio.wait_for(asyncio.gather(before, after), 2) == ["a", "b"]
        with pytest.raises(Dropped) as dropped:
            await asyncio.wait_for(bad, 2)
        assert dropped.value.reason == "stopped"
        await settle(rt)
        assert await asyncio.wait_for(rt.ask("bad", "again"), 2) == "again"
        await settle(rt)
        stats = rt.stats()
        assert outcomes(stats) == (4, 3, 0, 0, 1)
        assert ledger_ok(stats)
    assert calls == {"a": 1, "bad": 2, "b": 1}


@pytest.mark.parametrize("crash", CRASHES)
async def test_a_control_actor_handles_the_rest_of_its_batch_after_a_base_exception(
    crash: type[BaseException],
) -> None:
    """Item 2: a BaseException in one control message is logged (control_actor_failed,
    ERROR); the messages queued behind it in the same batch are handled at once."""

    class Control(LoopActor):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[Any] = []

        def on_receive(self, message: Any) -> Any:
            if message == "crash":
                raise crash("control")
            self.seen.append(message)
            return message

    with capture_logs() as logs:
        ref = Control.spawn()
        actor = ref._actor_weakref()
        ref.tell(1)
        ref.tell("crash")
        later = ref.ask(2, block=False)
        ref.tell(3)
        await wait_all_tasks_blocked()  # one batch, no further message arrives
        assert actor.seen == [1, 2, 3]  # type: ignore[union-attr]
        assert later.done()
        assert await later == 2
        assert ref.is_alive()
        assert await ref.ask(4, block=False) == 4
    [failed] = named(logs, "control_actor_failed")
    assert failed["log_level"] == "error"
    assert failed["actor"] == "Control"


# -- 3. SystemExit and KeyboardInterrupt from a handler ------------------------------------


def _quitting_bot(kind: str, quit_: type[BaseException], handled: list[Any]) -> Any:
    def handle(actor: UserActor, message: Any, ctx: Context) -> Any:
        if message == "quit":
            raise quit_("from a handler")
        handled.append((ctx.key, message))
        return message

    return actor_class(kind, handle)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quit_", QUITS)
def test_system_exit_from_a_handler_is_contained_in_async_mode(
    kind: str, quit_: type[BaseException]
) -> None:
    """Item 3: SystemExit/KeyboardInterrupt from user code never ends the loop: the ask
    raises HandlerCrashed, other keys and later messages (from the loop and from threads)
    are handled, the key starts afresh, the stats add up after stop."""
    handled: list[Any] = []
    Bot = _quitting_bot(kind, quit_, handled)

    async def scenario() -> dict[str, Any]:
        async with running(Bot, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
            crashing = rt.ask("k", "quit")
            rt.tell("k2", "quit")
            other = rt.ask("other", "hi")
            with pytest.raises(actors.HandlerCrashed) as info:
                await asyncio.wait_for(crashing, 2)
            assert isinstance(info.value.error, quit_)
            assert await asyncio.wait_for(other, 2) == "hi"
            await settle(rt)
            assert rt.stats()["state"] == "running"
            assert await asyncio.wait_for(rt.ask("k", "after"), 2) == "after"

            def from_thread() -> Any:
                for i in range(3):
                    rt.tell("t", i)
                return rt.ask("t", "end").get(timeout=2)

            assert await asyncio.to_thread(from_thread) == "end"
            await settle(rt)
        return rt.stats()

    with capture_logs() as logs:  # as data: no traceback rendering either
        stats = run_in_fresh_loop(scenario)
    assert stats["state"] == "stopped"
    assert [e["key"] for e in named(logs, "message_failed")] == ["k2"]
    assert outcomes(stats) == (8, 6, 2, 0, 0)
    assert ledger_ok(stats)
    assert [m for k, m in handled if k == "t"] == [0, 1, 2, "end"]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quit_", QUITS)
def test_system_exit_from_a_handler_is_contained_in_background_thread_mode(
    kind: str, quit_: type[BaseException]
) -> None:
    """Item 3, `with Runtime(Bot) as rt:`: after a handler's SystemExit/KeyboardInterrupt
    the runtime still runs; every later tell from the thread is handled, asks are
    answered, leaving `with` raises nothing, and accepted == the four outcomes."""
    handled: list[Any] = []
    Bot = _quitting_bot(kind, quit_, handled)

    with capture_logs() as logs, Runtime(Bot, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
        rt.tell("k2", "quit")  # a told crash: logged and dead-lettered, nobody waits
        with pytest.raises(actors.HandlerCrashed) as info:
            rt.ask("k", "quit").get(timeout=2)
        assert isinstance(info.value.error, quit_)
        for i in range(5):
            rt.tell("t", i)
        assert rt.ask("t", "end").get(timeout=2) == "end"
        assert rt.ask("k", "after").get(timeout=2) == "after"
        assert rt.stats()["state"] == "running"

    stats = rt.stats()
    assert stats["state"] == "stopped"
    assert [e["key"] for e in named(logs, "message_failed")] == ["k2"]
    assert [m for k, m in handled if k == "t"] == [0, 1, 2, 3, 4, "end"]
    assert outcomes(stats) == (9, 7, 2, 0, 0)
    assert ledger_ok(stats)


# -- 4. a loop that ended without stop() --------------------------------------------------


@pytest.mark.timeout(10)
def test_a_runtime_whose_loop_ended_without_stop_refuses_calls_and_resolved_everything() -> None:
    """Item 4: `asyncio.run` returned without `stop()`: every message accepted before has an
    outcome (in flight: Interrupted, waiting: Dropped, both "shutdown"); tell/ask from this
    thread and from another raise RuntimeStopped, count nothing, and leave no warning."""
    box: dict[str, Any] = {}
    loop_errors: list[dict[str, Any]] = []

    class Hang(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "hang":
                await asyncio.Event().wait()
            return message

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        rt = await Runtime(Hang).start()
        box["rt"] = rt
        box["in_flight"] = rt.ask("k", "hang")
        box["waiting"] = rt.ask("k", "w")
        assert await rt.ask("k2", "done") == "done"
        await in_flight(rt, 1)
        # ... and the application returns without stopping the runtime.

    asyncio.run(main())
    rt: Runtime = box["rt"]
    assert loop_errors == []
    assert box["in_flight"].done()
    with pytest.raises(Interrupted) as interrupted:
        box["in_flight"].get(timeout=0)
    assert interrupted.value.reason == "shutdown"
    assert box["waiting"].done()
    with pytest.raises(Dropped) as dropped:
        box["waiting"].get(timeout=0)
    assert dropped.value.reason == "shutdown"

    before = rt.stats()
    assert before["state"] == "stopped"
    assert outcomes(before) == (3, 1, 0, 1, 1)
    assert ledger_ok(before)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeStopped):
            rt.tell("k", 1)
        with pytest.raises(RuntimeStopped):
            rt.ask("k", 1)
        results: list[Any] = []

        def from_thread() -> None:
            for _ in range(3):
                for call in (rt.tell, rt.ask):
                    try:
                        call("k", 1)
                    except RuntimeStopped:
                        results.append("stopped")
                    except BaseException as exc:  # the test reports it
                        results.append(exc)
                    else:
                        results.append("accepted")

        thread = threading.Thread(target=from_thread)
        thread.start()
        thread.join(5)
        gc.collect()
    assert results == ["stopped"] * 6
    assert [str(w.message) for w in caught] == []
    after = rt.stats()
    assert outcomes(after) == outcomes(before)
    assert ledger_ok(after)


# -- 5. a handler that swallows the shutdown's cancellation --------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("stop_kind", ["async", "plain"])
async def test_a_handler_swallowing_the_shutdown_cancel_gets_one_outcome_and_no_overlap(
    stop_kind: str,
) -> None:
    """Item 5: a handler that catches CancelledError for longer than the shutdown grace:
    its message ends Interrupted("shutdown") once (never also handled), stop() returns
    within timeout + grace, and on_stop runs only after the handler has returned."""
    journal: list[str] = []
    returned = asyncio.Event()
    swallow_for = 1.5  # > timeout + GRACE: still running when stop() has returned

    class Stubborn(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            journal.append("begin")
            deadline = time.monotonic() + swallow_for
            try:
                while time.monotonic() < deadline:
                    with contextlib.suppress(asyncio.CancelledError):  # swallowed
                        await asyncio.sleep(0.01)
                return "done"
            finally:
                journal.append("end")
                returned.set()

    if stop_kind == "async":

        class Bot(Stubborn):
            async def on_stop(self, reason: str) -> None:
                journal.append(f"stop:{reason}")

    else:

        class Bot(Stubborn):  # type: ignore[no-redef]
            def on_stop(self, reason: str) -> None:
                journal.append(f"stop:{reason}")

    rt = await Runtime(Bot).start()
    reply = rt.ask("k", "m")
    await in_flight(rt, 1)
    started = time.monotonic()
    summary = await asyncio.wait_for(rt.stop(timeout=0.1), 5)
    elapsed = time.monotonic() - started
    assert elapsed < 0.1 + GRACE + SLACK, elapsed
    with pytest.raises(Interrupted) as info:
        await reply
    assert info.value.reason == "shutdown"
    assert (summary.handled, summary.interrupted, summary.interrupted_on_stop) == (0, 1, 1)

    await asyncio.wait_for(returned.wait(), 3)  # the handler gives up swallowing
    await wait_all_tasks_blocked()
    stats = rt.stats()
    assert outcomes(stats) == (1, 0, 0, 1, 0)
    assert ledger_ok(stats)
    assert journal == ["begin", "end", "stop:shutdown"]


# -- 6. handler_timeout for handlers that ignore it ------------------------------------------


def _overrunning_bot(
    kind: str,
    journal: list[tuple[str, Any, float]],
    run_for: float,
    release: threading.Event | None = None,
) -> Any:
    """The message "slow" overruns `run_for` s, ignoring cancellation (async; `release` ends
    it early) or ctx.interrupted (blocking: a plain time.sleep)."""
    released = release if release is not None else threading.Event()
    if kind == "async":

        class Swallower(UserActor):
            async def on_message(self, message: Any, ctx: Context) -> Any:
                journal.append(("begin", message, time.monotonic()))
                if message == "slow":
                    deadline = time.monotonic() + run_for
                    while time.monotonic() < deadline and not released.is_set():
                        with contextlib.suppress(asyncio.CancelledError):  # swallowed
                            await asyncio.sleep(0.01)
                journal.append(("end", message, time.monotonic()))
                return message

            def on_stop(self, reason: str) -> None:
                journal.append(("stop", reason, time.monotonic()))

        return Swallower

    class Sleeper(UserActor):
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> Any:
            journal.append(("begin", message, time.monotonic()))
            if message == "slow":
                time.sleep(run_for)  # never looks at ctx.interrupted
            journal.append(("end", message, time.monotonic()))
            return message

        def on_stop(self, reason: str) -> None:
            journal.append(("stop", reason, time.monotonic()))

    return Sleeper


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_handler_timeout_holds_for_a_handler_that_ignores_it(kind: str) -> None:
    """Item 6: the ask gets HandlerTimeout at the timeout although the handler goes on;
    the key's next message (and on_stop("restart")) waits until it has really returned
    (G2); one ERROR `handler_overran` after OVERRUN_GRACE; stats show the overrun."""
    journal: list[tuple[str, Any, float]] = []
    timeout, run_for = 0.3, 1.5  # the handler is still running 1.0 s past its timeout
    Bot = _overrunning_bot(kind, journal, run_for)
    restart = RestartPolicy(handler_timeout=timeout, backoff_min=0, jitter=0)
    with capture_logs() as logs:
        async with running(Bot, idle_timeout=None, restart=restart) as rt:
            started = time.monotonic()
            slow = rt.ask("k", "slow")
            after = rt.ask("k", "next")
            with pytest.raises(HandlerTimeout):
                await asyncio.wait_for(slow, 3)
            elapsed = time.monotonic() - started
            assert timeout <= elapsed < timeout + SLACK, elapsed
            stats = rt.stats()
            assert stats["overrunning"] == 1
            assert stats["failed"] == 1
            assert not after.done()
            assert await asyncio.wait_for(after, 3) == "next"
            await settle(rt)
            stats = rt.stats()
            assert (stats["overrunning"], stats["overruns"]) == (0, 1)
            assert outcomes(stats) == (2, 1, 1, 0, 0)
            assert ledger_ok(stats)
    kinds = [(what, message) for what, message, _ in journal]
    assert kinds == [
        ("begin", "slow"),
        ("end", "slow"),
        ("stop", "restart"),
        ("begin", "next"),
        ("end", "next"),
        ("stop", "shutdown"),
    ]
    [overran] = named(logs, "handler_overran")
    assert overran["log_level"] == "error"
    assert overran["key"] == "k"
    assert overran["timeout_s"] == timeout
    assert timeout + GRACE - 0.05 <= overran["running_s"] < run_for
    [failed] = named(logs, "actor_failed")
    assert "HandlerTimeout" in failed["error"]


@pytest.mark.timeout(10)
async def test_handler_timeout_of_a_swallowing_handler_on_virtual_time(clock: FakeClock) -> None:
    """Item 6 on virtual time: HandlerTimeout at exactly started + timeout; `handler_overran`
    once, at exactly OVERRUN_GRACE later; the next message only after the handler returned."""
    release = asyncio.Event()
    journal: list[tuple[str, Any, float]] = []

    class Swallower(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            journal.append(("begin", message, clock.now()))
            while message == "slow" and not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    journal.append(("swallowed", message, clock.now()))
            journal.append(("end", message, clock.now()))
            return message

    restart = policy(handler_timeout=5.0)
    with capture_logs() as logs:
        rt = await Runtime(Swallower, clock=clock, idle_timeout=None, restart=restart).start()
        try:
            slow = rt.ask("k", "slow")
            after = rt.ask("k", "next")
            await clock.advance(5.0 - EPS)
            assert not slow.done()
            await clock.advance(EPS)
            assert slow.done()
            with pytest.raises(HandlerTimeout):
                await slow
            assert rt.stats()["overrunning"] == 1
            await clock.advance(GRACE - EPS)
            assert named(logs, "handler_overran") == []
            await clock.advance(EPS)
            [overran] = named(logs, "handler_overran")
            assert (overran["key"], overran["timeout_s"], overran["running_s"]) == (
                "k",
                5.0,
                5.0 + GRACE,
            )
            await clock.advance(20.0)  # still running: the next message still waits
            assert not after.done()
            assert len(named(logs, "handler_overran")) == 1
            release.set()
            await settle(rt)
            await clock.advance(1.0)  # the restart backoff, if it was not over yet
            assert await asyncio.wait_for(after, 2) == "next"
            stats = rt.stats()
            assert (stats["overrunning"], stats["overruns"]) == (0, 1)
            assert ledger_ok(stats)
        finally:
            release.set()  # a failure above must not leave stop() waiting for it
            await asyncio.wait_for(rt.stop(timeout=1), 5)
    assert [e[:2] for e in journal if e[0] != "swallowed"] == [
        ("begin", "slow"),
        ("end", "slow"),
        ("begin", "next"),
        ("end", "next"),
    ]
    assert journal[-2][2] >= journal[-3][2]  # "next" began after "slow" ended


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_an_overrunning_handler_does_not_hold_stop_past_its_timeout(kind: str) -> None:
    """Item 6: stop(timeout=T) during an overrun returns within T + grace; the overrunning
    message keeps its one outcome (failed with HandlerTimeout)."""
    journal: list[tuple[str, Any, float]] = []
    release = threading.Event()
    Bot = _overrunning_bot(kind, journal, run_for=3.0, release=release)
    restart = RestartPolicy(handler_timeout=0.2, backoff_min=0, jitter=0)
    try:
        rt = await Runtime(Bot, idle_timeout=None, restart=restart).start()
        with pytest.raises(HandlerTimeout):
            await asyncio.wait_for(rt.ask("k", "slow"), 3)
        started = time.monotonic()
        summary = await asyncio.wait_for(rt.stop(timeout=0.3), 5)
        elapsed = time.monotonic() - started
        assert elapsed < 0.3 + GRACE + SLACK, elapsed
        assert (summary.accepted, summary.failed, summary.interrupted, summary.handled) == (
            1,
            1,
            0,
            0,
        )
    finally:
        release.set()


# -- 7. shutdown within its timeout -------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["blocking", "async"])
async def test_stop_returns_within_its_timeout_plus_the_grace_with_a_stuck_handler(
    kind: str,
) -> None:
    """Item 7: a handler stuck in time.sleep(3) (blocking) or never returning (async,
    swallowing cancellation): stop(timeout=T) returns within T + 1 s; the stuck message
    ends Interrupted("shutdown"), the waiting one Dropped("shutdown")."""
    release = threading.Event()
    started = threading.Event()

    if kind == "blocking":

        class Stuck(UserActor):
            blocking = True

            def on_message(self, message: Any, ctx: Context) -> Any:
                started.set()
                time.sleep(3)
                return message

    else:

        class Stuck(UserActor):  # type: ignore[no-redef]
            async def on_message(self, message: Any, ctx: Context) -> Any:
                started.set()
                deadline = time.monotonic() + 5  # "never", within this test
                while not release.is_set() and time.monotonic() < deadline:
                    with contextlib.suppress(asyncio.CancelledError):  # swallowed
                        await asyncio.sleep(0.01)
                return message

    try:
        rt = await Runtime(Stuck).start()
        stuck = rt.ask("k", "stuck")
        waiting = rt.ask("k", "waiting")
        assert await asyncio.to_thread(started.wait, 2)
        t0 = time.monotonic()
        summary = await asyncio.wait_for(rt.stop(timeout=0.3), 5)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.3 + GRACE + SLACK, elapsed
        with pytest.raises(Interrupted) as interrupted:
            await stuck
        assert interrupted.value.reason == "shutdown"
        with pytest.raises(Dropped) as dropped:
            await waiting
        assert dropped.value.reason == "shutdown"
        assert not summary.drained
        assert (summary.dropped_on_stop, summary.interrupted_on_stop) == (1, 1)
        assert summary.accepted == (
            summary.handled + summary.failed + summary.interrupted + summary.dropped
        )
    finally:
        release.set()


def _stuck_thread_bot(started: threading.Event) -> Any:
    class Stuck(UserActor):
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> Any:
            started.set()
            time.sleep(3)
            return message

    return Stuck


@pytest.mark.timeout(10)
def test_leaving_with_does_not_wait_for_a_stuck_blocking_thread() -> None:
    """Item 7, background-thread mode: after stop(timeout=T), leaving `with` does not wait
    for the abandoned thread; the whole takes T + grace, not the 3 s the thread sleeps."""
    started = threading.Event()
    with Runtime(_stuck_thread_bot(started)) as rt:
        stuck = rt.ask("k", "stuck")
        assert started.wait(2)
        t0 = time.monotonic()
        summary = rt.stop(timeout=0.3).get(timeout=5)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.3 + GRACE + SLACK, elapsed
    assert summary.interrupted_on_stop == 1
    with pytest.raises(Interrupted):
        stuck.get(timeout=0)


@pytest.mark.timeout(10)
def test_leaving_async_with_and_asyncio_run_do_not_wait_for_a_stuck_blocking_thread() -> None:
    """Item 7, async mode: after stop(timeout=T), neither leaving `async with` nor the end of
    `asyncio.run` waits for the abandoned thread."""
    started = threading.Event()
    times: dict[str, float] = {}

    async def main() -> None:
        async with Runtime(_stuck_thread_bot(started)) as rt:
            rt.tell("k", "stuck")
            assert await asyncio.to_thread(started.wait, 2)
            times["stop"] = time.monotonic()
            await asyncio.wait_for(rt.stop(timeout=0.3), 5)
        times["exited"] = time.monotonic()

    run_in_fresh_loop(main)
    done = time.monotonic()
    assert times["exited"] - times["stop"] < 0.3 + GRACE + SLACK
    assert done - times["stop"] < 0.3 + GRACE + SLACK + SLACK


# -- 8. ctx.tell during the shutdown ------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", KINDS)
async def test_ctx_tell_during_the_drain_does_not_fail_the_handler(kind: str) -> None:
    """Item 8: a handler running during the drain tells a follow-up (to its own key and to
    another): its own message is handled, not failed; each follow-up is handled or ends
    Dropped("shutdown"); no actor_failed, no RuntimeStopped inside the handler."""
    raised: list[BaseException] = []
    handled: list[Any] = []

    def handle(actor: UserActor, message: Any, ctx: Context) -> Any:
        if message == "first":
            try:
                ctx.tell(ctx.key, "follow-up")
                ctx.tell("other", "follow-up")
            except Exception as exc:
                raised.append(exc)
                raise
        handled.append((ctx.key, message))
        return message

    with capture_logs() as logs:
        rt = await Runtime(actor_class(kind, handle)).start()
        first = rt.ask("k", "first")  # handled during the drain: nothing ran before stop()
        summary = await asyncio.wait_for(rt.stop(timeout=2), 5)
        assert await first == "first"
    assert raised == []
    assert named(logs, "actor_failed") == []
    assert summary.failed == 0
    assert summary.accepted == 3
    assert summary.accepted == summary.handled + summary.dropped
    follow_ups_handled = [k for k, m in handled if m == "follow-up"]
    letters = rt.dead_letters()
    assert all(d.reason == "shutdown" for d in letters)
    assert sorted([*follow_ups_handled, *(d.key for d in letters)]) == ["k", "other"]
    assert ledger_ok(rt.stats())


@pytest.mark.timeout(10)
async def test_ctx_tell_after_the_drain_timed_out_ends_dropped_not_raised() -> None:
    """Item 8: a handler cancelled at the end of the drain tells a follow-up while it winds
    down: no RuntimeStopped in the handler, its message ends Interrupted("shutdown"), the
    follow-up Dropped("shutdown"), nothing fails."""
    raised: list[BaseException] = []
    release = asyncio.Event()

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "long":
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    try:
                        ctx.tell(ctx.key, "follow-up")
                    except Exception as exc:
                        raised.append(exc)
                    raise
            return message

    with capture_logs() as logs:
        rt = await Runtime(Bot).start()
        long = rt.ask("k", "long")
        await in_flight(rt, 1)
        summary = await asyncio.wait_for(rt.stop(timeout=0.05), 5)
        with pytest.raises(Interrupted) as info:
            await long
        assert info.value.reason == "shutdown"
    assert raised == []
    assert named(logs, "actor_failed") == []
    assert [(d.message, d.reason) for d in rt.dead_letters()] == [("follow-up", "shutdown")]
    assert (summary.accepted, summary.interrupted, summary.dropped, summary.failed) == (2, 1, 1, 0)
    assert ledger_ok(rt.stats())


@pytest.mark.timeout(20)
@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_threads_calling_in_while_it_stops_lose_nothing(blocking: bool) -> None:
    """Threads keep telling and asking while another thread stops the runtime: every call
    either raises RuntimeStopped (or MailboxFull) and counts nothing, or returned and its
    message gets exactly one outcome; the stats add up and every returned ask is resolved."""
    if blocking:

        class Bot(UserActor):
            blocking = True

            def on_message(self, message: Any, ctx: Context) -> Any:
                time.sleep(0.0005)
                return message

    else:

        class Bot(UserActor):  # type: ignore[no-redef]
            async def on_message(self, message: Any, ctx: Context) -> Any:
                await asyncio.sleep(0.0005)
                return message

    returned: list[int] = []
    asks: list[Any] = []
    unexpected: list[BaseException] = []
    started = threading.Barrier(5)

    def producer(n: int) -> None:
        started.wait()
        i = 0
        while True:
            i += 1
            try:
                if i % 3:
                    rt.tell(f"u{i % 7}", (n, i))
                else:
                    asks.append(rt.ask(f"u{i % 7}", (n, i)))
            except RuntimeStopped:
                return
            except actors.MailboxFull:
                continue
            except BaseException as exc:  # the test reports it
                unexpected.append(exc)
                return
            returned.append(1)

    with Runtime(Bot, max_pending=50, max_workers=4) as rt:
        threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        started.wait()
        time.sleep(0.05)  # let them pile up work
        summary = rt.stop(timeout=0.2).get(timeout=5)
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads)
    assert unexpected == []
    stats = rt.stats()
    assert stats["state"] == "stopped"
    assert stats["accepted"] == len(returned) == summary.accepted
    assert ledger_ok(stats)
    assert stats["pending"] == 0
    assert all(future.done() for future in asks)


@pytest.mark.timeout(10)
async def test_a_plain_handler_blocking_the_loop_past_its_timeout_fails_on_return() -> None:
    """A plain `def` handler that blocks the loop itself past `handler_timeout`: no timer
    can fire meanwhile, so it is judged when it returns: HandlerTimeout, the instance is
    restarted, and the key's next message is handled."""

    class Bot(UserActor):
        def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "block":
                time.sleep(0.1)  # blocks the event loop
            return message

    restart = RestartPolicy(handler_timeout=0.02, backoff_min=0.0, backoff_max=0.0, jitter=0.0)
    async with running(Bot, restart=restart) as rt:
        blocked = rt.ask("k", "block")
        after = rt.ask("k", "next")
        with pytest.raises(HandlerTimeout):
            await asyncio.wait_for(blocked, 2)
        assert await asyncio.wait_for(after, 2) == "next"
        await settle(rt)
        stats = rt.stats()
        assert (stats["failed"], stats["handled"], stats["restarts"]) == (1, 1, 1)
        assert ledger_ok(stats)


# -- a burst cancelled before its first step ---------------------------------------------


class _Stops(UserActor):
    stopped: ClassVar[list[str]] = []

    async def on_message(self, message: Any, ctx: Context) -> Any:
        return message

    def on_stop(self, reason: str) -> None:
        _Stops.stopped.append(reason)


@pytest.mark.parametrize("turns", range(4))
async def test_stop_right_after_activation_runs_on_stop_and_returns(turns: int) -> None:
    """A stop that cancels a burst task before its first step (the actor was just
    activated) used to leave the cell waiting for a `finally` that never runs: the stop
    took its whole timeout and `on_stop` never ran."""
    _Stops.stopped.clear()
    rt = Runtime(_Stops, idle_timeout=None)
    await rt.start()
    rt.tell("k", 1)
    rt.tell("k", 2)
    for _ in range(turns):
        await asyncio.sleep(0)
    summary = await asyncio.wait_for(rt.stop(drain=False, timeout=60), 10)  # a hang detector
    assert _Stops.stopped == ["shutdown"]
    assert rt.stats()["live_actors"] == 0
    assert summary.actors_stopped == 1
    assert summary.accepted == summary.handled + summary.dropped + summary.interrupted
