"""Deduplication by `msg_id`, in one process: the window of ids seen.

A message sent with `msg_id=` (Telegram's `update_id`, Slack's `event_id`, a
WhatsApp `wamid`) is remembered from its acceptance: while it waits or runs
(*pending*) and, once it has its outcome, for `dedup_window` seconds (*done*),
at most `dedup_max` done ids, the oldest forgotten first. A message whose id is
remembered is a duplicate: it is not accepted, a `tell` of it returns as usual,
and an ask of it resolves like the original (the same result, or the same
error), at once if the original has its outcome, else with it.

Nothing runs on a timer: the window is trimmed whenever an id is looked up or
settled. Only messages with a `msg_id` pay anything; the window is created on
the first one. With a durable store the done ids are journaled with their
acknowledgement (supervisors/durable/), and the window is loaded back at start:
a webhook redelivered after a crash is still a duplicate. An ask of a duplicate
whose original ran before the restart resolves with `Dropped("duplicate")`,
since its result was not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from actors._errors import Dropped

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Dedup"]

_UNKNOWN = object()  # an id remembered across a restart: its outcome was not kept


class _Seen:
    """One remembered id: its outcome once it has one, and the asks of its duplicates."""

    __slots__ = ("at", "error", "result", "waiters")

    def __init__(self) -> None:
        self.at = 0.0  # when it got its outcome
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiters: list[Any] | None = None  # asks of duplicates, while it is pending


def _resolve(key: Any, reply_to: Any, seen: _Seen) -> None:
    if seen.result is _UNKNOWN:
        error: BaseException = Dropped(key, "duplicate")
        reply_to.set_exception((type(error), error, None))
    elif seen.error is not None:
        reply_to.set_exception((type(seen.error), seen.error, seen.error.__traceback__))
    else:
        reply_to.set(seen.result)


class Dedup:
    """The ids seen, pending and done (loop thread only)."""

    __slots__ = ("_done", "_now", "_pending", "duplicates", "keep", "max_ids", "window")

    def __init__(self, window: float, max_ids: int, now: Callable[[], float]) -> None:
        self.window = window
        self.max_ids = max_ids
        self._now = now
        self._pending: dict[str, tuple[Any, _Seen]] = {}
        self._done: OrderedDict[str, _Seen] = OrderedDict()
        self.duplicates = 0
        # With a durable store: journals each id that got its outcome (`Durable.seen`).
        self.keep: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    def duplicate(self, key: Any, msg_id: str, reply_to: Any) -> bool:
        """Whether `msg_id` is remembered; if so, `reply_to` (an ask's future, or None)
        resolves like the original's."""
        entry = self._pending.get(msg_id)
        if entry is not None:
            seen = entry[1]
            if reply_to is not None:
                if seen.waiters is None:
                    seen.waiters = []
                seen.waiters.append((key, reply_to))
            self.duplicates += 1
            return True
        self._trim(self._now())
        done = self._done.get(msg_id)
        if done is None:
            return False
        if reply_to is not None:
            _resolve(key, reply_to, done)
        self.duplicates += 1
        return True

    def accepted(self, key: Any, msg_id: str) -> None:
        """A message with `msg_id` was accepted: it is pending."""
        self._pending[msg_id] = (key, _Seen())

    def settled(self, msg_id: str, result: Any, error: BaseException | None) -> None:
        """Its message got its outcome (`error` None: handled with `result`)."""
        entry = self._pending.pop(msg_id, None)
        if entry is None:
            return
        seen = entry[1]
        seen.at = now = self._now()
        seen.result = result
        seen.error = error
        waiters, seen.waiters = seen.waiters, None
        self._done[msg_id] = seen
        self._trim(now)
        if self.keep is not None:
            self.keep(msg_id)
        for key, reply_to in waiters or ():
            _resolve(key, reply_to, seen)

    def remember(self, msg_id: str, at: float) -> None:
        """An id done before a restart (`at`: when, on this clock), its result unknown."""
        seen = _Seen()
        seen.at = at
        seen.result = _UNKNOWN
        self._done[msg_id] = seen
        self._done.move_to_end(msg_id)

    def _trim(self, now: float) -> None:
        done = self._done
        horizon = now - self.window
        while done:
            oldest = next(iter(done.values()))
            if len(done) <= self.max_ids and oldest.at > horizon:
                return
            done.popitem(last=False)
