"""`Source`: what the admin endpoint, the dashboard and the command line read.

One protocol for the three places a runtime's state can come from: a running
`Runtime` in this process (`RuntimeSource`), a cluster read straight from Redis
(`supervisors.cluster` inspection), and a journal file read offline. Every
value is plain JSON (str keys, numbers, lists), so the same dicts go over HTTP.

Dead letters are dicts with `id` (str, stable while the letter is kept), `key`,
`reason`, `priority`, `attempts`, `error` (a one-line description or None),
`message` (a short repr) and `added_at` (epoch seconds, or None).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Source"]


@runtime_checkable
class Source(Protocol):
    """A runtime's figures and dead letters, as plain JSON values."""

    async def status(self) -> dict[str, Any]:
        """The figures: `Runtime.stats()`'s keys where the source has them."""

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The dead letters kept, oldest first."""

    async def redeliver(self, letter_id: str) -> bool:
        """Send the letter's message to its key again and forget the letter;
        False if no letter has that id (any more)."""

    async def purge(self, ids: list[str] | None = None) -> int:
        """Forget the letters `ids` (None: every one); how many were forgotten."""
