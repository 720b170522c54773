"""Actor state between incarnations: `UserActor.snapshot()` kept, `restore(state)` given back.

A class that overrides `snapshot()` has it called after every `on_stop` of its
incarnations (idle, `max_active` eviction, restart, stop, shutdown); the next
incarnation of the key gets the state through `restore(state)` before its
`on_start`. Without a store the states stay in memory (a dict: the objects
themselves, never copied); with a durable store they are encoded by the codec
and saved in the journal, so they also survive a process restart
(`JournalSnapshots`, in supervisors/durable/_snapshots.py).

What a failure does: a `snapshot()` that raises, or a state the codec refuses,
is logged (`snapshot_failed`) and the state kept before stays. A state that
no longer decodes, or a `restore` that raises, is a failure of the key (phase
"restore") for the supervisor's policy, like a failing `on_start`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._user_actor import UserActor

__all__ = ["MemorySnapshots", "Snapshots", "save"]


class Snapshots(Protocol):
    """Where states are kept: `MemorySnapshots` here, `JournalSnapshots` with a store."""

    def get(self, key: str | int) -> Any:
        """The state kept for `key`, or None."""
        ...

    def put(self, key: str | int, state: Any) -> None:
        """Keep `state` for `key` (None forgets it)."""
        ...


class MemorySnapshots:
    """States kept in this process only."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[str | int, Any] = {}

    def get(self, key: str | int) -> Any:
        """The state kept for `key`, or None."""
        return self._states.get(key)

    def put(self, key: str | int, state: Any) -> None:
        """Keep `state` for `key` (None forgets it)."""
        if state is None:
            self._states.pop(key, None)
        else:
            self._states[key] = state

    def forget(self, stale: Callable[[str | int], bool]) -> int:
        """Forget the states of the keys for which `stale(key)` is true; how many."""
        keys = [key for key in self._states if stale(key)]
        for key in keys:
            del self._states[key]
        return len(keys)

    def __len__(self) -> int:
        return len(self._states)


def save(store: Snapshots, key: str | int, actor: UserActor, log: Any) -> None:
    """Keep what `actor.snapshot()` returns; log a failure and keep the previous state."""
    try:
        store.put(key, actor.snapshot())
    except BaseException as exc:  # the application's code: contained, never the loop's end
        log.error("snapshot_failed", key=key, error=repr(exc), exc_info=exc)
