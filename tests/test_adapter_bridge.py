"""The part every framework adapter shares (supervisors/adapters/_bridge.py), on its own.

The adapters' own tests drive it through each framework; these pin what they all
rely on: the translation of a platform's rate-limit error for every kind of
handler and factory, the control lane, the lifecycle's idempotence, and that a
registration the user made first is kept.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from actors import Codec, Context, RetryAfter, UserActor
from actors.testing import FakeClock
from supervisors.adapters._bridge import Bridge, check_commands, with_platform_errors

pytestmark = pytest.mark.timeout(30)


class Flood(Exception):
    """A platform's "too many requests", as a framework would raise it."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"wait {wait}")
        self.wait = wait


def translate(error: BaseException) -> float | None:
    return error.wait if isinstance(error, Flood) else None


RUNS: list[tuple[str, Any, int]] = []


class AsyncBot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        RUNS.append(("async", message, ctx.attempt))
        if message == "flood" and len(RUNS) == 1:
            raise Flood(2.0)
        if message == "boom":
            raise ValueError("boom")
        return message


class SyncBot(UserActor):
    def on_message(self, message: Any, ctx: Context) -> Any:
        RUNS.append(("sync", message, ctx.attempt))
        if len(RUNS) == 1:
            raise Flood(2.0)
        return message


class BlockingBot(UserActor):
    blocking = True

    def on_message(self, message: Any, ctx: Context) -> Any:
        RUNS.append(("blocking", threading.current_thread() is threading.main_thread(), 0))
        if len(RUNS) == 1:
            raise Flood(2.0)
        return message


@pytest.fixture(autouse=True)
def _fresh() -> None:
    RUNS.clear()


def bridge(factory: Any, **options: Any) -> Bridge:
    options.setdefault("idle_timeout", None)
    return Bridge(factory, platform="test", translate=translate, runtime_options=options)


@pytest.mark.parametrize("cls", [AsyncBot, SyncBot, BlockingBot])
async def test_a_platform_flood_error_reruns_the_message_after_its_wait(cls: type) -> None:
    clock = FakeClock()
    b = bridge(cls, clock=clock)
    async with b:
        reply = b.runtime.ask("k", "flood")
        for _ in range(200):
            if b.runtime.stats()["retry_afters"]:
                break
            await asyncio.sleep(0.001 if cls is BlockingBot else 0)
        assert b.runtime.stats()["retry_afters"] == 1
        assert len(RUNS) == 1
        await clock.advance(2.0)
        assert await asyncio.wait_for(reply, 5) == "flood"
        stats = b.runtime.stats()
        assert (stats["handled"], stats["failed"], stats["restarts"]) == (1, 0, 0)
    assert len(RUNS) == 2


async def test_the_subclass_keeps_the_class_name_knobs_and_other_errors() -> None:
    made = with_platform_errors(AsyncBot, translate)
    assert isinstance(made, type)
    assert issubclass(made, AsyncBot)
    assert made.__name__ == "AsyncBot"
    assert made.__qualname__ == AsyncBot.__qualname__
    async with bridge(AsyncBot) as b:
        with pytest.raises(ValueError, match="boom"):
            await b.runtime.ask("k", "boom")


async def test_a_factory_that_is_not_a_class_gets_the_translation_too() -> None:
    clock = FakeClock()
    async with bridge(lambda key: AsyncBot(key), clock=clock) as b:
        reply = b.runtime.ask("k", "flood")
        for _ in range(50):
            if b.runtime.stats()["retry_afters"]:
                break
            await asyncio.sleep(0)
        await clock.advance(2.0)
        assert await asyncio.wait_for(reply, 5) == "flood"


async def test_inorders_own_retry_after_passes_through_untranslated() -> None:
    seen: list[BaseException] = []

    def spy(error: BaseException) -> float | None:
        seen.append(error)
        return None

    class Own(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if ctx.attempt == 1 and not RUNS:
                RUNS.append(("own", message, 1))
                raise RetryAfter(0)
            return message

    b = Bridge(Own, platform="t", translate=spy, runtime_options={"idle_timeout": None})
    async with b:
        assert await asyncio.wait_for(b.runtime.ask("k", "x"), 5) == "x"
    assert seen == []


async def test_route_sends_commands_on_the_control_lane_and_skips_keyless_updates() -> None:
    got: list[tuple[Any, int]] = []

    class Log(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            got.append((message, ctx.priority))

    b = Bridge(
        Log,
        platform="t",
        translate=translate,
        interrupts=("/Stop",),
        clears=("reset",),
        priority=7,
        runtime_options={"idle_timeout": None},
    )
    assert b.commands == {"stop": (True, False), "reset": (False, True)}
    async with b:
        assert await b.route("hello", None, "id-0", None) is False
        for update, msg_id, command in [
            ("hello", "id-1", None),
            ("hello again", "id-1", None),  # a duplicate id
            ("/STOP", "id-2", "STOP"),
            ("/reset", "id-3", "reset"),
            ("/help", "id-4", "help"),
        ]:
            assert await b.route(update, "k", msg_id, command) is True
            await asyncio.wait_for(b.runtime.wait_idle(), 5)
    assert got == [("hello", 0), ("/STOP", 7), ("/reset", 7), ("/help", 0)]
    assert b.runtime.stats()["duplicates"] == 1


async def test_start_and_stop_are_idempotent_and_stop_before_start_is_none() -> None:
    b = bridge(AsyncBot)
    assert await b.stop() is None
    assert not b.running
    await b.start()
    await b.start()
    assert b.running
    first = await b.stop()
    assert first is not None
    assert await b.stop() is first
    assert not b.running


def test_a_registration_the_user_made_first_is_kept() -> None:
    class Update:
        def __init__(self, n: int) -> None:
            self.n = n

    codec = Codec()
    codec.register(Update, tag="mine", encode=lambda u: u.n, decode=Update)
    b = Bridge(AsyncBot, platform="t", translate=translate, runtime_options={"codec": codec})
    b.register(Update, tag="theirs", encode=lambda u: -u.n, decode=Update)
    assert b.codec is codec
    assert codec.loads(codec.dumps(Update(3))).n == 3  # "mine": not negated


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"interrupts": "stop"}, TypeError, "collection of command names"),
        ({"interrupts": ("",)}, ValueError, "a command is"),
        ({"clears": (3,)}, ValueError, "a command is"),
        ({"clears": ("x" * 33,)}, ValueError, "a command is"),
        ({"priority": 0}, ValueError, "priority"),
        ({"priority": True}, ValueError, "priority"),
        ({"send_timeout": 0}, ValueError, "send_timeout"),
        ({"stop_timeout": None}, ValueError, "stop_timeout"),
        ({"drain": 1}, TypeError, "drain"),
    ],
)
def test_bad_options_fail_at_the_call_site(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Bridge(AsyncBot, platform="t", translate=translate, runtime_options={}, **options)


def test_check_commands_strips_the_slash_and_lowercases() -> None:
    assert check_commands(["/Stop", "cancel", "stop"], "x") == {"stop", "cancel"}


async def test_concurrent_routes_to_a_full_mailbox_keep_the_platforms_order() -> None:
    """A framework runs one task per update; under backpressure each still gets in in
    the order its task called `route`."""
    got: list[Any] = []
    gate = asyncio.Event()

    class Slow(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            got.append(message)
            if message == 0:
                await gate.wait()

    b = Bridge(Slow, platform="t", translate=translate, runtime_options={"max_pending": 1})
    async with b:
        await b.route(0, "k", "id-0", None)
        routes = [asyncio.ensure_future(b.route(n, "k", f"id-{n}", None)) for n in range(1, 7)]
        for _ in range(100):
            await asyncio.sleep(0)
        gate.set()  # places come free: updates arriving now queue behind those waiting
        routes += [asyncio.ensure_future(b.route(n, "k", f"id-{n}", None)) for n in range(7, 12)]
        assert await asyncio.wait_for(asyncio.gather(*routes), 5) == [True] * 11
        await asyncio.wait_for(b.runtime.wait_idle(), 5)
    assert got == list(range(12))


class Fatal(BaseException):
    """Not an Exception: the translation must not see it, nor swallow it."""


async def test_a_base_exception_goes_past_the_translation_to_the_runtime() -> None:
    from actors import HandlerCrashed

    seen: list[BaseException] = []

    def spy(error: BaseException) -> float | None:
        seen.append(error)
        return None

    class Dies(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            raise Fatal("gone")

    b = Bridge(Dies, platform="t", translate=spy, runtime_options={"idle_timeout": None})
    async with b:
        with pytest.raises(HandlerCrashed) as crashed:
            await asyncio.wait_for(b.runtime.ask("k", "x"), 5)
        assert isinstance(crashed.value.error, Fatal)
    assert seen == []


async def test_a_translated_handler_that_swallows_its_cancellation_is_still_interrupted() -> None:
    """/stop through a bridge: the wrapped handler catches the cancel and returns a
    result as if nothing happened; the turn still ends `Interrupted` (its late result is
    moot), and the stop command runs after it."""
    from actors import Interrupted

    started = asyncio.Event()
    got: list[Any] = []

    class Stubborn(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            got.append(message)
            if message == "long":
                started.set()
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    return "finished anyway"  # swallowed
            return message

    b = Bridge(Stubborn, platform="t", translate=translate, runtime_options={"idle_timeout": None})
    async with b:
        reply = b.runtime.ask("k", "long")
        await asyncio.wait_for(started.wait(), 5)
        await b.route("/stop", "k", "id-stop", "stop")
        with pytest.raises(Interrupted):
            await asyncio.wait_for(reply, 5)
        await asyncio.wait_for(b.runtime.wait_idle(), 5)
    assert got[:2] == ["long", "/stop"]


def test_a_blocking_translated_handler_past_its_timeout_is_a_handler_timeout() -> None:
    """A plain-def handler, in its thread, that overruns `handler_timeout`: the caller
    hears `HandlerTimeout`, the platform translation is not asked, the key goes on."""
    from actors import HandlerTimeout
    from supervisors import RestartPolicy

    release = threading.Event()

    class Stuck(UserActor):
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "stuck":
                release.wait(10)
            return message

    b = Bridge(
        Stuck,
        platform="t",
        translate=translate,
        runtime_options={
            "idle_timeout": None,
            "restart": RestartPolicy(handler_timeout=0.2, backoff_min=0.0, jitter=0.0),
        },
    )

    async def run() -> Any:
        async with b:
            with pytest.raises(HandlerTimeout):
                await asyncio.wait_for(b.runtime.ask("k", "stuck"), 5)
            release.set()
            return await asyncio.wait_for(b.runtime.ask("k", "after"), 5)

    assert asyncio.run(run()) == "after"
