"""The floor of P1 and P2 in this harness: ``python -m benchmarks.floor``.

DESIGN.md's P2 asks for twice the ask throughput of ``promise-queue``, the
leanest per-user design. This script measures what *no runtime at all*
achieves under the same harness: ``tell`` and ``ask`` run the handler right
away in the caller (no queue, no task, no per-user order for a handler that
suspends; only correct for the no-op handlers of P1 and P2). Whatever a
runtime does, it cannot beat that. If the floor itself is below twice
``promise-queue``, the target is out of reach for any implementation in this
Python, and the report says so.

It runs the same ``tell_throughput`` and ``ask_throughput`` functions as the
scenarios, alternating the floor and ``promise-queue`` ``--repeat`` times,
and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable
from typing import Any

from benchmarks._peers import Key, Peer, PromiseQueuePeer
from benchmarks._throughput import ask_throughput, tell_throughput


class FloorPeer(Peer):
    """Runs the handler at once, in the caller: the cost of the harness and handler alone."""

    name = "floor"
    description = "no runtime: the handler runs inside tell/ask"

    def _run(self, key: Key, message: Any) -> Any:
        """Run the handler to completion right here and return its result."""
        coro = self._handler(key, message)
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration as done:
            return done.value
        raise RuntimeError("the floor only runs handlers that never suspend")

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self._run(key, message)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> Awaitable[Any]:
        future = self.loop.create_future()
        future.set_result(self._run(key, message))
        return future

    def live(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def measure(users: int, messages: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median msg/s of the floor and of ``promise-queue`` for P1 (tell) and P2 (ask)."""
    results: dict[str, dict[str, float]] = {}
    for label, scenario in (("p1_tell", tell_throughput), ("p2_ask", ask_throughput)):
        runs: dict[str, list[float]] = {"floor": [], "promise-queue": []}
        for _ in range(repeat):
            for cls in (FloorPeer, PromiseQueuePeer):
                rate, _ = await scenario(cls, users, messages)
                runs[cls.name].append(rate)
        results[label] = {name: statistics.median(rates) for name, rates in runs.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(measure(args.users, args.messages, args.repeat))
    for label, rates in results.items():
        ratio = rates["floor"] / rates["promise-queue"]
        print(
            f"{label}: floor {rates['floor']:,.0f}/s, promise-queue "
            f"{rates['promise-queue']:,.0f}/s: the floor is {ratio:.2f}x promise-queue"
        )


if __name__ == "__main__":
    main()
