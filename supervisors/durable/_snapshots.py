"""Actor states saved in the durable journal: `JournalSnapshots`.

With `Runtime(store=...)`, what `UserActor.snapshot()` returns is encoded by the
runtime's codec and saved in the journal with the next group commit, so the next
incarnation of the key gets it through `restore(state)` after a process restart too
(supervisors/_snapshots.py says when states are taken and given back, and what a
failure does; in memory they are kept by `MemorySnapshots` there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.journal._codec import Codec
    from actors.journal._seam import Journal

__all__ = ["JournalSnapshots"]


class JournalSnapshots:
    """States encoded by the codec and saved in the journal (group-committed)."""

    __slots__ = ("_codec", "_journal")

    def __init__(self, journal: Journal, codec: Codec) -> None:
        self._journal = journal
        self._codec = codec

    def get(self, key: str | int) -> Any:
        """The state last saved for `key` (even if not committed yet), or None.

        Raises `CodecError` if it no longer decodes, `JournalError` if it cannot be read.
        """
        data = self._journal.load_snapshot(key)
        return None if data is None else self._codec.loads(data)

    def put(self, key: str | int, state: Any) -> None:
        """Save `state` for `key` (None drops the saved one). Raises `CodecError` first
        if it cannot be encoded: the state saved before then stays."""
        if state is None:
            self._journal.drop_snapshot(key)
        else:
            self._journal.save_snapshot(key, self._codec.dumps(state))
