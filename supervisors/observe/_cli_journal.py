"""A journal file, offline: its dead letters, and `journal check | compact | export`.

What happens when:

* **`dead-letters ... --journal FILE`**: `JournalSource` opens the file with
  `SQLiteJournal`, which takes the journal's lock: while the bot runs, that
  fails and the message says to stop it or use `--url`. A redelivery appends the
  letter's envelope back as a pending message (the next start replays it, as
  `Runtime.redeliver` would have sent it) and, once that is committed, removes
  the letter: a crash in between leaves a duplicate, never nothing. An envelope
  replays with the journal's attempt count, not the one it carries, so it goes
  back as it was recorded, whatever codec registrations its message needs.
* **`check`**: read only (`mode=ro`), lock or not: the header, the application
  id and schema version, the tables, `PRAGMA integrity_check`, then counts of
  pending messages (and how many were in flight), dead letters, snapshots and
  remembered ids. A problem is reported with its reason (exit 1).
* **`compact`**: takes the lock (refused while the bot runs), checks the file as
  a start would, then `VACUUM` and `wal_checkpoint(TRUNCATE)`; sizes before/after.
* **`export`**: read only; JSON lines of the pending messages, dead letters
  and snapshots, each with its raw record (base64) and, where the default
  `Codec` decodes it, the value as JSON.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import math
import os
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from actors._errors import JournalError
from actors.journal._codec import Codec
from actors.journal._file import APPLICATION_ID, SCHEMA_VERSION, claim, open_checked
from actors.journal._sqlite import SQLiteJournal
from supervisors.cluster._inspect import one_line, peek_envelope
from supervisors.observe._cli_targets import FAILED, UNREACHABLE, CliError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from actors.journal._seam import DeadLetterRecord

try:
    import fcntl
except ImportError:  # Windows: no lock to look at
    fcntl = None  # type: ignore[assignment]

__all__ = ["JournalSource", "check", "compact", "export_rows", "journal_letter", "size_of"]

_TABLES: Final = {"messages", "snapshots", "dead_letters", "meta", "seen"}


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise CliError(UNREACHABLE, f"{path}: no such file")
    if not os.path.isfile(path):
        raise CliError(UNREACHABLE, f"{path}: not a file")
    return path


def _in_use(path: str) -> bool:
    """Whether a journal (a running bot) holds the file's lock now."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path + "-lock", os.O_RDWR)
    except OSError:
        return False  # never opened as a journal, or the lock file was removed: free
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock taken just now, if it was
    return False


class JournalSource:
    """The `Source` of a journal file that no runtime has open."""

    def __init__(self, path: str) -> None:
        self.path = _existing(path)
        self.codec = Codec()
        try:
            self.journal = SQLiteJournal(path)
        except JournalError as exc:
            if "in use" in str(exc):
                msg = (
                    f"{path}: the journal is in use by a running runtime (it holds the "
                    "journal's lock): stop it first, or use --url with its admin endpoint"
                )
                raise CliError(UNREACHABLE, msg) from None
            raise CliError(UNREACHABLE, _first_sentences(exc)) from None

    def close(self) -> None:
        self.journal.close()

    async def status(self) -> dict[str, Any]:
        return {
            "pending": self.journal.pending_count(),
            "dead_letters": len(self.journal.dead_letters()),
        }

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [journal_letter(self.codec, record) for record in self.journal.dead_letters()]

    def _record(self, letter_id: str) -> DeadLetterRecord | None:
        wanted = int(letter_id) if letter_id.isdigit() else None
        return next((r for r in self.journal.dead_letters() if r.id == wanted), None)

    async def redeliver(self, letter_id: str) -> bool:
        record = self._record(letter_id)
        if record is None:
            return False
        try:
            envelope = self.codec.loads(record.data)[0]
            peek_envelope(envelope)
        except Exception as exc:
            msg = f"dead letter {letter_id} holds no message that can be sent again ({exc})"
            raise CliError(FAILED, msg) from None
        self.journal.append([(record.key, envelope)]).committed.result()
        self.journal.remove_dead_letters([record.id]).result()
        return True

    async def purge(self, ids: list[str] | None = None) -> int:
        kept = {record.id for record in self.journal.dead_letters()}
        if ids is not None:
            kept &= {int(i) for i in ids if i.isdigit()}
        self.journal.remove_dead_letters(sorted(kept)).result()
        return len(kept)


def _first_sentences(error: JournalError) -> str:
    """What is wrong with the file, without the recovery advice (`journal check` has it)."""
    text = str(error).partition(" It was left as it is.")[0]
    return text.rstrip(".") + " (see: inorder journal check FILE)"


def journal_letter(codec: Codec, record: DeadLetterRecord) -> dict[str, Any]:
    """A journaled dead letter as the `Source` protocol's dict (see _source.py)."""
    letter: dict[str, Any] = {
        "id": str(record.id),
        "key": record.key,
        "reason": record.reason,
        "priority": 0,
        "attempts": 0,
        "error": None,
        "message": f"<{len(record.data)} bytes>",
        "added_at": record.added_at,
    }
    try:
        envelope, etype, etext, ctype, ctext = codec.loads(record.data)
        if ctype or etype:
            letter["error"] = one_line(f"{ctype}: {ctext}" if ctype else f"{etype}: {etext}")
        _, priority, attempt, _, body = peek_envelope(envelope)
    except Exception:  # a record this version does not read: shown as its size
        return letter
    letter.update(priority=priority, attempts=attempt, message=f"<{len(body)} bytes>")
    with contextlib.suppress(Exception):  # a type the application registered: its size
        letter["message"] = one_line(repr(codec.loads(body)))
    return letter


def size_of(path: str) -> int:
    """Bytes of the journal file and its write-ahead log."""
    total = 0
    for name in (path, path + "-wal"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(name)
    return total


def _read_only(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def check(path: str) -> tuple[list[str], dict[str, Any]]:
    """The problems of the journal file at `path` (none: a sound journal) and its figures."""
    _existing(path)
    report: dict[str, Any] = {"file": path, "bytes": size_of(path), "in_use": _in_use(path)}
    with open(path, "rb") as f:
        header = f.read(100)
    if not header:
        return ["the file is empty"], report
    if not header.startswith(b"SQLite format 3\x00"):
        return ["not an SQLite database, so not an inorder journal"], report
    try:
        with contextlib.closing(_read_only(path)) as db:
            return _check_db(db, report), report
    except sqlite3.Error as exc:
        return [f"SQLite cannot read it: {exc}"], report


def _check_db(db: sqlite3.Connection, report: dict[str, Any]) -> list[str]:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        return [f"an SQLite database, but not an inorder journal (application_id {app_id:#x})"]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    report["schema_version"] = version
    if version not in (1, SCHEMA_VERSION):
        return [f"schema version {version}; this version of inorder reads {SCHEMA_VERSION}"]
    problems = [one_line(str(row[0])) for row in db.execute("PRAGMA integrity_check(4)")]
    if problems != ["ok"]:
        return ["corrupted (integrity_check: " + "; ".join(problems) + ")"]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = _TABLES - tables - ({"seen"} if version == 1 else set())
    if missing:
        return ["tables missing: " + ", ".join(sorted(missing))]

    def count(sql: str) -> int:
        return int(db.execute(sql).fetchone()[0])

    report.update(
        pending=count("SELECT count(*) FROM messages"),
        in_flight_at_stop=count("SELECT count(*) FROM messages WHERE attempts > 0"),
        dead_letters=count("SELECT count(*) FROM dead_letters"),
        snapshots=count("SELECT count(*) FROM snapshots"),
        seen_ids=count("SELECT count(*) FROM seen") if "seen" in tables else 0,
        next_seq=count("SELECT value FROM meta WHERE name = 'next_seq'"),
    )
    return []


def compact(path: str) -> tuple[int, int]:
    """VACUUM the journal and truncate its WAL; its size (file and WAL) before and after."""
    _existing(path)
    try:
        lock = claim(path)
    except JournalError:
        msg = f"{path}: the journal is in use by a running runtime: stop it first"
        raise CliError(UNREACHABLE, msg) from None
    try:
        before = size_of(path)
        try:
            db = open_checked(path, "normal")
        except JournalError as exc:
            raise CliError(UNREACHABLE, _first_sentences(exc)) from None
        try:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        return before, size_of(path)
    finally:
        os.close(lock)


def export_rows(path: str) -> Iterator[dict[str, Any]]:
    """The journal's pending messages, dead letters and snapshots, as JSON-ready rows."""
    problems, _ = check(path)
    if problems:
        raise CliError(FAILED, f"{path}: {problems[0]}")
    codec = Codec()
    with contextlib.closing(_read_only(path)) as db:
        yield {"type": "journal", "schema_version": SCHEMA_VERSION}
        rows = db.execute("SELECT seq, key, data, attempts FROM messages ORDER BY seq")
        for seq, key, data, attempts in rows:
            row = {"type": "pending", "seq": seq, "key": key, "attempts": attempts}
            yield row | _envelope(codec, bytes(data))
        rows = db.execute("SELECT id, key, data, reason, added_at FROM dead_letters ORDER BY id")
        for letter_id, key, data, reason, added_at in rows:
            row = {"type": "dead_letter", "id": letter_id, "key": key, "reason": reason}
            row["added_at"] = added_at
            try:
                envelope, etype, etext, ctype, ctext = codec.loads(bytes(data))
                row |= {"error": [etype, etext], "cause": [ctype, ctext]}
                row |= _envelope(codec, envelope)
            except Exception as exc:
                row["undecodable"] = str(exc)
            yield row | {"data": _b64(bytes(data))}
        for key, data in db.execute("SELECT key, data FROM snapshots ORDER BY key"):
            row = {"type": "snapshot", "key": key, "data": _b64(bytes(data))}
            try:
                row["state"] = jsonable(codec.loads(bytes(data)))
            except Exception as exc:
                row["undecodable"] = str(exc)
            yield row


def _envelope(codec: Codec, data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"data": _b64(data)}
    try:
        record = codec.decode_envelope(data)
    except Exception as exc:
        out["undecodable"] = str(exc)
        with contextlib.suppress(Exception):
            out["priority"] = peek_envelope(data)[1]
        return out
    return out | {
        "priority": record.priority,
        "accepted_at": record.accepted_at,
        "msg_id": record.msg_id,
        "expires_at": record.expires_at,
        "message": jsonable(record.message),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jsonable(value: Any) -> Any:
    """`value` (as the default codec decodes it) in JSON's terms: bytes as
    `{"$bytes": base64}`, a datetime as ISO 8601, a non-finite float as a string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return {"$bytes": _b64(value)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return repr(value)
