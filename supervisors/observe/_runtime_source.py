"""`RuntimeSource`: a running `Runtime` in this process, as the admin endpoint reads it.

Every method runs on the runtime's loop thread (the admin endpoint serves on
that loop) or hands its work there (`Runtime.stats()` and friends do), so it
never races the runtime. Dead letters kept only in memory get an id made of
their identity (`m` and a hexadecimal number), valid while the letter is kept;
a journaled or cluster letter keeps its store's id.
"""

from __future__ import annotations

import reprlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors._outcomes import DeadLetter
    from supervisors._runtime import Runtime

__all__ = ["RuntimeSource", "letter_id", "letter_json"]

_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlevel = 3


class RuntimeSource:
    """The `Source` of one runtime of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __repr__(self) -> str:
        return f"<RuntimeSource {self.runtime!r}>"

    async def status(self) -> dict[str, Any]:
        stats = self.runtime.stats()
        stats["now"] = time.time()
        return stats

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [letter_json(letter) for letter in self.runtime.dead_letters()]

    async def redeliver(self, letter_id: str) -> bool:
        letter = self._find(letter_id)
        if letter is None:
            return False
        try:
            # How it ends this time is the runtime's to report: if it fails again, it is
            # a dead letter again (logged), so the future is not waited for here.
            self.runtime.redeliver(letter)
        except ValueError:  # redelivered or purged since _find, by another request
            return False
        return True

    async def purge(self, ids: list[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)
        purged = 0
        for letter in self.runtime.dead_letters():
            if wanted is None or letter_id(letter) in wanted:
                try:
                    self.runtime.discard(letter)
                except ValueError:  # gone since the listing
                    continue
                purged += 1
        return purged

    def _find(self, wanted: str) -> DeadLetter | None:
        for letter in self.runtime.dead_letters():
            if letter_id(letter) == wanted:
                return letter
        return None


def letter_id(letter: DeadLetter) -> str:
    """The letter's id for the admin API: its store's id, else its identity."""
    kept = letter.journal_id
    return str(kept) if kept is not None else f"m{id(letter):x}"


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the `Source` protocol's plain dict."""
    error = letter.cause if letter.cause is not None else letter.error
    return {
        "id": letter_id(letter),
        "key": letter.key,
        "reason": letter.reason,
        "priority": letter.priority,
        "attempts": letter.attempts,
        "error": None if error is None else _one_line(f"{type(error).__name__}: {error}"),
        "message": _one_line(_REPR.repr(letter.message)),
        "added_at": None,
    }


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:299] + "…"
