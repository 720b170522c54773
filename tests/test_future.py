"""LoopFuture: awaitable on the loop, blocking get() from other threads, never deadlocks."""

from __future__ import annotations

import asyncio
import threading

import pykka
import pytest

from actors import BlockingOnLoop, LoopFuture


class TestLoopFuture:
    async def test_await_a_future_already_set_does_not_suspend(self) -> None:
        """A resolved future returns at once (no waiter allocated)."""
        fut: LoopFuture[int] = LoopFuture(asyncio.get_running_loop())
        fut.set(3)

        assert await fut == 3
        assert fut._waiter is None

    async def test_await_parks_until_set(self) -> None:
        """Awaiting a pending future yields to the loop until it is set."""
        loop = asyncio.get_running_loop()
        fut: LoopFuture[str] = LoopFuture(loop)
        loop.call_soon(fut.set, "ok")

        assert await fut == "ok"

    async def test_exception_is_raised_by_await(self) -> None:
        """An exception outcome is raised to the awaiting caller."""
        fut: LoopFuture[None] = LoopFuture(asyncio.get_running_loop())
        fut.set_exception(KeyError("k"))

        with pytest.raises(KeyError):
            await fut

    async def test_get_on_the_loop_thread_raises_instead_of_deadlocking(self) -> None:
        """Blocking on the loop that must produce the value is refused with a clear error."""
        fut: LoopFuture[int] = LoopFuture(asyncio.get_running_loop())

        with pytest.raises(BlockingOnLoop, match="await future"):
            fut.get(timeout=1)

    async def test_get_from_another_thread_blocks_until_set(self) -> None:
        """pykka's blocking interface works from a foreign thread."""
        loop = asyncio.get_running_loop()
        fut: LoopFuture[int] = LoopFuture(loop)
        started = threading.Event()

        def consumer() -> int:
            started.set()
            return fut.get(timeout=5)

        result = asyncio.ensure_future(asyncio.to_thread(consumer))
        await asyncio.to_thread(started.wait)
        fut.set(42)

        assert await result == 42

    async def test_get_timeout_raises_pykka_timeout(self) -> None:
        """A foreign-thread get() with a timeout raises pykka.Timeout."""
        fut: LoopFuture[int] = LoopFuture(asyncio.get_running_loop())

        with pytest.raises(pykka.Timeout):
            await asyncio.to_thread(fut.get, timeout=0.01)

    async def test_first_outcome_wins(self) -> None:
        """A second resolution is ignored, so a message never gets two outcomes."""
        fut: LoopFuture[int] = LoopFuture(asyncio.get_running_loop())
        fut.set(1)
        fut.set(2)
        fut.set_exception(ValueError())

        assert await fut == 1

    async def test_pykka_combinators_work(self) -> None:
        """map() and join() from pykka's Future API work through get hooks."""
        loop = asyncio.get_running_loop()
        a: LoopFuture[int] = LoopFuture(loop)
        b: LoopFuture[int] = LoopFuture(loop)
        a.set(2)
        b.set(3)

        doubled = a.map(lambda x: x * 2)
        joined = a.join(b)

        assert await asyncio.to_thread(doubled.get, timeout=1) == 4
        assert list(await asyncio.to_thread(joined.get, timeout=1)) == [2, 3]

    async def test_awaited_on_another_loop_is_bridged(self) -> None:
        """A future of one loop can be awaited on a loop in another thread."""
        loop = asyncio.get_running_loop()
        fut: LoopFuture[str] = LoopFuture(loop)

        def other_thread() -> str:
            async def wait() -> str:
                return await fut

            return asyncio.run(wait())

        result = asyncio.ensure_future(asyncio.to_thread(other_thread))
        for _ in range(20):
            await asyncio.sleep(0.005)
        fut.set("bridged")

        assert await asyncio.wait_for(result, 5) == "bridged"
