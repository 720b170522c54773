"""Choosing a runtime's durable store: `Runtime(store=..., codec=...)` checked and opened.

`check_store` runs in `Runtime.__init__` (a bad argument fails there, G9);
`open_store` runs at `start()`: a path becomes an `SQLiteJournal` (which
raises `JournalError` for a file that is not a journal it reads, naming the
file and the recovery path), and the runtime's `Durable` is built around it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from actors.journal._codec import Codec
from actors.journal._sqlite import SQLiteJournal
from supervisors.durable._journaling import Durable

if TYPE_CHECKING:
    import asyncio

    from actors.journal._seam import Journal

__all__ = ["check_store", "open_store"]

# What a store must have: the `actors.Journal` protocol's methods.
_JOURNAL_METHODS = (
    "append",
    "ack",
    "mark_started",
    "pending",
    "save_snapshot",
    "load_snapshot",
    "drop_snapshot",
    "add_dead_letter",
    "dead_letters",
    "remove_dead_letters",
    "flush",
    "close",
)


def check_store(store: Any, codec: Any) -> tuple[Journal | str | None, Codec]:
    """Validate `store` and `codec`; return the store (a path as a str) and the codec."""
    if codec is not None and not isinstance(codec, Codec):
        msg = f"codec must be an actors.Codec, got {codec!r}"
        raise TypeError(msg)
    codec = codec if codec is not None else Codec()
    if store is None:
        return None, codec
    if isinstance(store, str | os.PathLike):
        path = os.fspath(store)
        if not isinstance(path, str) or not path:
            msg = f"store must be a journal or a non-empty path, got {store!r}"
            raise ValueError(msg)
        return path, codec
    missing = [name for name in _JOURNAL_METHODS if not callable(getattr(store, name, None))]
    if missing:
        msg = (
            f"store must be an actors.Journal (e.g. SQLiteJournal) or a path, got {store!r} "
            f"(it lacks {', '.join(missing)})"
        )
        raise TypeError(msg)
    journal: Journal = store
    return journal, codec


def open_store(
    store: Journal | str,
    codec: Codec,
    loop: asyncio.AbstractEventLoop,
    log: Any,
    max_deliveries: int = 5,
) -> Durable:
    """The runtime's `Durable` on `store`, opening the SQLite journal at a path."""
    journal: Journal = SQLiteJournal(store) if isinstance(store, str) else store
    durable = Durable(journal, codec, loop, log)
    durable.max_deliveries = max_deliveries
    return durable
