"""Looking inside a running runtime: `stats`, `pending`, `dead_letters`, `redeliver`, `wait_idle`.

`Introspection` is the part of `Runtime` that reads its state (a mixin over
`Messaging`, which takes messages; the lifecycle is in supervisors/_runtime.py).
Any thread may call these: what reads the router's state runs on the loop
thread (`_on_loop`: at once on the loop thread or after the loop has gone,
else handed to the loop and waited for, up to 30 s).

Before `start()` each answers as for an empty runtime: `stats()` has its keys
with zeros, `pending()` is 0, `dead_letters()` is empty.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

from actors._future import LoopFuture
from supervisors._checks import check_key
from supervisors._messaging import Messaging
from supervisors._quiescence import wait_idle
from supervisors._stats import stats_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._outcomes import DeadLetter
    from supervisors.cluster._node import ClusterNode

__all__ = ["Introspection"]

_T = TypeVar("_T")


class Introspection(Messaging):
    """What a runtime holds, read from any thread; and a dead letter sent again."""

    # Set by `Runtime` (see its __init__ and start()).
    _node: ClusterNode | None

    async def wait_idle(self) -> None:
        """Return once nothing runs and nothing is runnable (quiescence, for tests and drains)."""
        if self._core is None:
            return
        await wait_idle(self._core)

    def stats(self) -> dict[str, Any]:
        """Live figures: actors, pending messages, outcome counts, restarts, latencies.

        Before `start()` the same keys, with zeros.
        """
        return self._on_loop(self._stats)

    def _stats(self) -> dict[str, Any]:
        out = stats_of(self._core, self._state, self._durable)
        if self._node is not None:
            out["cluster"] = self._node.stats()
        return out

    def pending(self, key: str | int) -> int:
        """How many messages wait for `key` (0 for an unknown key)."""
        check_key(key)
        core = self._core
        cell = core.cells.get(key) if core is not None else None
        return len(cell.mailbox) if cell is not None else 0

    def dead_letters(self) -> list[DeadLetter]:
        """The retained dead letters (failed or dropped messages), oldest first."""
        return self._on_loop(lambda: self._core.outcomes.dead_letters() if self._core else [])

    def redeliver(self, letter: DeadLetter) -> LoopFuture[Any]:
        """Send a dead letter's message to its key again and forget the record.

        Returns the future of the redelivered message (as `ask` does), so the
        caller sees how it ends this time.

        Raises:
            ValueError: the letter is not (or no longer) retained, e.g. already redelivered.
        """
        if not self._on_loop(lambda: self._core.outcomes.forget(letter) if self._core else False):
            msg = f"{letter!r} is not a retained dead letter (already redelivered?)"
            raise ValueError(msg)
        future = self.ask(letter.key, letter.message, priority=letter.priority)
        # After the ask (on the loop, in order): the message is journaled, or sent to
        # Redis, before its letter goes, so a crash in between leaves a duplicate, never
        # nothing.
        self._forget_kept(letter)
        return future

    def discard(self, letter: DeadLetter) -> None:
        """Forget a dead letter without running it (a purge), here and in the journal or
        the cluster that keeps it.

        Raises:
            ValueError: the letter is not (or no longer) retained.
        """
        if not self._on_loop(lambda: self._core.outcomes.forget(letter) if self._core else False):
            msg = f"{letter!r} is not a retained dead letter (already redelivered?)"
            raise ValueError(msg)
        self._forget_kept(letter)

    def _forget_kept(self, letter: DeadLetter) -> None:
        journal_id = letter.journal_id
        durable, node = self._durable, self._node
        if durable is not None and isinstance(journal_id, int):
            self._on_loop(lambda: durable.forget_dead_letters([journal_id]))
        elif node is not None and isinstance(journal_id, str):
            self._on_loop(lambda: node.forget_letter(journal_id))

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread or loop.is_closed():
            return fn()
        future: LoopFuture[_T] = LoopFuture(loop)

        def run() -> None:
            try:
                future.set(fn())
            except Exception as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            return fn()
        return future.get(timeout=30)
