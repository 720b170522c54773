"""Opening an SQLite journal file: the claim on it, a new file, and the checks.

`SQLiteJournal` opens its file through these functions. A new file is written
aside and renamed into place, so that a file at the journal's path is always a
complete journal. An existing file is checked before anything is written to it:
anything that is not a sound journal of this schema version is refused with a
`JournalError` that names the file and the recovery path, and is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Final, Literal

from actors._errors import JournalError

try:
    import fcntl
except ImportError:  # Windows: no claim on the file (document: one journal per file)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Sync",
    "claim",
    "connect",
    "create",
    "open_checked",
    "open_error",
    "read_counters",
]

#: The schema version written in `PRAGMA user_version`; other versions are refused.
SCHEMA_VERSION: Final = 2

# Version 2 added the `seen` table (the deduplication window's ids); a version-1
# journal is upgraded in place when it is opened.
_UPGRADES: Final = {
    1: (
        "CREATE TABLE seen (msg_id TEXT PRIMARY KEY, at REAL NOT NULL)",
        "CREATE INDEX seen_at ON seen (at)",
    ),
}

#: `PRAGMA application_id` of an inorder journal ("inOr"), which tells it from
#: any other SQLite database.
APPLICATION_ID: Final = 0x696E4F72

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"

_SCHEMA: Final = (
    # `key` has no declared type, so a str key stays TEXT and an int key INTEGER.
    "CREATE TABLE messages (seq INTEGER PRIMARY KEY, key NOT NULL, data BLOB NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE snapshots (key PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, key NOT NULL, data BLOB NOT NULL,"
    " reason TEXT NOT NULL, added_at REAL NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta VALUES ('next_seq', 1), ('next_dead_letter', 1)",
    *_UPGRADES[1],
)

Sync = Literal["normal", "full"]


def open_error(path: str, problem: str, cause: BaseException | None = None) -> JournalError:
    """The error for a file at `path` that is not a journal: what is wrong, and the way out."""
    detail = f" ({cause})" if cause is not None else ""
    return JournalError(
        f"cannot open the journal {path!r}: {problem}{detail}. It was left as it is. "
        f"To start again, move it aside (with its -wal and -shm files, if any) and open "
        f"a new journal: the messages it held that were not handled yet, the actor "
        f"snapshots and the dead letters it kept are then lost (salvage what you can "
        f"from the copy first, e.g. with the sqlite3 shell's .recover)."
    )


def claim(path: str) -> int:
    """Lock `<path>-lock`, so that one journal at a time, in any process, uses the
    file (two would hand out the same seqs); returns its descriptor.

    A lock file of its own rather than the database: closing a descriptor of the
    database would drop the locks SQLite holds on it (POSIX locks are per process).
    """
    lock_path = path + "-lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise JournalError(
                f"cannot create the journal {path!r}: its directory does not exist"
            ) from exc
        raise JournalError(f"cannot open the journal {path!r}: {exc}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalError(
                f"the journal {path!r} is in use by another SQLiteJournal, in this "
                f"process or another one (it holds {lock_path!r}); close that one first"
            ) from exc
    return fd


def connect(path: str, sync: Sync) -> sqlite3.Connection:
    """A connection to `path` in autocommit mode, usable from any thread."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        db.execute(f"PRAGMA synchronous={sync.upper()}")
    except BaseException:
        db.close()
        raise
    return db


def create(path: str) -> None:
    """Write a new, empty journal aside and rename it into place, so that a file at
    `path` is always a complete journal."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise JournalError(f"cannot create the journal {path!r}: its directory does not exist")
    if os.path.exists(path + "-wal"):
        raise open_error(
            path, "the file is missing but its -wal file is there (was the journal deleted?)"
        )
    tmp = f"{path}.new-{os.getpid()}-{threading.get_ident()}"
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before any table
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("BEGIN")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")  # persistent; checkpoints the header
        finally:
            db.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # the rename itself, where that is possible
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except (OSError, sqlite3.Error) as exc:
        raise JournalError(f"cannot create the journal {path!r}: {exc}") from exc
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp + suffix)


def open_checked(path: str, sync: Sync) -> sqlite3.Connection:
    """Open the writer's connection, refusing anything but a sound journal of ours."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise open_error(path, "it cannot be read", exc) from exc
    if not header:
        raise open_error(path, "the file is empty (truncated?)")
    if not header.startswith(_SQLITE_MAGIC):
        raise open_error(path, "it is not an SQLite database (no SQLite header)")
    if len(header) < 100:
        raise open_error(path, "the file is truncated (shorter than its header)")
    try:
        db = connect(path, sync)
    except sqlite3.Error as exc:
        raise open_error(path, "SQLite cannot open it", exc) from exc
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise open_error(
                path,
                f"it is an SQLite database, but not an inorder journal "
                f"(application_id {app_id:#x})",
            )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version in _UPGRADES:
            db.execute("BEGIN IMMEDIATE")
            for statement in _UPGRADES[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise open_error(
                path,
                f"its schema version is {version}, this version of inorder reads "
                f"version {SCHEMA_VERSION}",
            )
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise open_error(
                path, "it is corrupted or truncated (quick_check: " + "; ".join(problems) + ")"
            )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise open_error(path, f"it cannot be switched to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
    except JournalError:
        db.close()
        raise
    except sqlite3.Error as exc:
        db.close()
        raise open_error(path, "it is corrupted or not a journal", exc) from exc
    return db


def read_counters(db: sqlite3.Connection, path: str) -> tuple[int, int]:
    """The next seq and the next dead letter id that the journal at `path` hands out."""
    row = db.execute(
        "SELECT (SELECT value FROM meta WHERE name = 'next_seq'),"
        " (SELECT value FROM meta WHERE name = 'next_dead_letter')"
    ).fetchone()
    if row is None or type(row[0]) is not int or type(row[1]) is not int:
        raise open_error(path, "its meta table is damaged")
    return row[0], row[1]
