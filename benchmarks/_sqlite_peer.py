"""The ``sqlite-per-message`` peer: per-user queues journaled by hand in SQLite.

What an asyncio application writes when it wants its messages to survive a
crash without a runtime that does it: the ``asyncio-queue`` design (a queue
and a worker task per user, :class:`benchmarks._peers.AsyncioQueuePeer`)
plus a table of received messages. Every message is written when it is
received, in a transaction of its own (``INSERT`` and ``commit``), before it
is queued; once its handler has run, it is deleted in another transaction.
The database is set up as the runtime's ``SQLiteJournal`` is by default: WAL
mode and ``synchronous=NORMAL`` (survives a killed process, not a power
loss). The writes are plain ``sqlite3`` calls on the event loop, as an
application makes them; each commit is short (no fsync with ``NORMAL``).

``send`` is the awaitable, durable send: it returns once the message is
committed, which here is as soon as ``tell`` returns.

The database lives in a temporary directory of its own (inside
``directory`` if given), created at ``start`` and removed at ``close``.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import msgpack

from benchmarks._peers import AsyncioQueuePeer, Handler, Key

#: The file name of the peer's database inside its temporary directory.
DB_NAME = "inbox.db"


class SQLitePerMessagePeer(AsyncioQueuePeer):
    """``asyncio-queue`` with an SQLite transaction per received and per handled message."""

    name = "sqlite-per-message"
    description = "asyncio.Queue per user + one SQLite transaction per message (WAL, NORMAL)"
    capabilities = frozenset()

    def __init__(self, handler: Handler, *, directory: str | None = None, **options: Any) -> None:
        self._user_handler = handler
        super().__init__(self._handle, **options)
        self._parent = directory
        self._directory: str | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def path(self) -> Path:
        """The database file (while started)."""
        assert self._directory is not None, "start() first"
        return Path(self._directory) / DB_NAME

    async def start(self) -> None:
        await super().start()
        self._directory = tempfile.mkdtemp(prefix="bench-sqlite-peer-", dir=self._parent)
        db = self._db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, key TEXT NOT NULL, data BLOB)")
        db.commit()

    def _receive(self, key: Key, message: Any) -> int:
        """Write one received message in its own transaction; its row id."""
        assert self._db is not None, "start() first"
        cursor = self._db.execute(
            "INSERT INTO inbox (key, data) VALUES (?, ?)", (str(key), msgpack.packb(message))
        )
        self._db.commit()
        return cursor.lastrowid or 0

    async def _handle(self, key: Key, item: tuple[int, Any]) -> Any:
        row, message = item
        try:
            return await self._user_handler(key, message)
        finally:
            if self._db is not None:  # closed while a handler ran: the row stays
                self._db.execute("DELETE FROM inbox WHERE id = ?", (row,))
                self._db.commit()

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self._put(key, (self._receive(key, message), message), None, 0, False)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self._put(key, (self._receive(key, message), message), fut, 0, False)
        return fut

    async def send(self, key: Key, message: Any) -> None:
        """Accept ``message`` durably: it is committed when this returns."""
        self.tell(key, message)

    def rows(self) -> int:
        """Messages written and not yet deleted."""
        assert self._db is not None, "start() first"
        return int(self._db.execute("SELECT count(*) FROM inbox").fetchone()[0])

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
