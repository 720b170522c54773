"""The kernel: pykka actors on an asyncio loop, without threads or the global registry."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest

from actors import BlockingOnLoop, UserActor
from actors._kernel import LoopActor


class Counter(LoopActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.stopped = False
        self.threads: set[int] = set()

    def on_receive(self, message: Any) -> Any:
        self.threads.add(threading.get_ident())
        if message == "boom":
            raise ValueError("boom")
        self.count += message
        return self.count

    def add(self, n: int) -> int:
        self.count += n
        return self.count

    def on_stop(self) -> None:
        self.stopped = True


class TestLoopActor:
    async def test_tell_and_ask_run_on_the_loop_thread(self) -> None:
        """Messages are handled in order on the loop's own thread; no thread per actor."""
        ref = Counter.spawn()
        ref.tell(1)
        ref.tell(2)

        assert await ref.ask(3, block=False) == 6
        assert ref._actor_weakref().threads == {threading.get_ident()}  # type: ignore[union-attr]

    async def test_not_in_pykka_global_registry(self) -> None:
        """spawn() keeps pykka's process-global ActorRegistry untouched."""
        ref = Counter.spawn()

        assert ref not in pykka.ActorRegistry.get_all()

    async def test_proxy_calls_work(self) -> None:
        """pykka proxies work: attribute calls become messages."""
        ref = Counter.spawn()

        assert await ref.proxy().add(5) == 5

    async def test_asked_failure_goes_to_the_caller_and_the_actor_lives_on(self) -> None:
        """An exception from an asked message reaches its future; the actor keeps going."""
        ref = Counter.spawn()

        with pytest.raises(ValueError, match="boom"):
            await ref.ask("boom", block=False)
        assert await ref.ask(1, block=False) == 1

    async def test_blocking_ask_on_the_loop_is_refused(self) -> None:
        """pykka's default blocking ask() on the loop thread raises instead of deadlocking."""
        ref = Counter.spawn()

        with pytest.raises(BlockingOnLoop):
            ref.ask(1)

    async def test_tell_from_another_thread(self) -> None:
        """A foreign thread's tell is handed to the loop; a blocking ask from there works."""
        ref = Counter.spawn()

        def from_thread() -> int:
            ref.tell(10)
            return ref.ask(1, timeout=5)  # type: ignore[no-any-return]

        assert await asyncio.to_thread(from_thread) == 11

    async def test_stop_runs_on_stop_and_fails_later_asks(self) -> None:
        """stop() runs on_stop; messages after it fail with ActorDeadError."""
        ref = Counter.spawn()
        actor = ref._actor_weakref()
        ref.stop(block=False)
        late = ref.ask(1, block=False)
        await asyncio.sleep(0)

        assert actor.stopped  # type: ignore[union-attr]
        assert not ref.is_alive()
        with pytest.raises(pykka.ActorDeadError):
            await late


class TestUserActorSeam:
    def test_user_actor_is_a_pykka_actor_without_the_per_actor_cost(self) -> None:
        """UserActor keeps pykka's names but builds no UUID, Event or ActorRef up front."""

        class Bot(UserActor):
            def on_message(self, message: Any, ctx: Any) -> Any:
                return message

        bot = Bot("telegram:1")

        assert isinstance(bot, pykka.Actor)
        assert bot.key == "telegram:1"
        assert "actor_urn" not in vars(bot)
        assert bot.actor_urn.endswith("telegram:1")
        assert not bot.actor_stopped.is_set()

    def test_starting_a_user_actor_outside_a_runtime_is_a_clear_error(self) -> None:
        """User actors are started by a Runtime; pykka's start() says so."""

        class Bot(UserActor):
            def on_message(self, message: Any, ctx: Any) -> Any:
                return message

        with pytest.raises(TypeError, match="Runtime"):
            Bot.start("k")
