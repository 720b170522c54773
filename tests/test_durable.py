"""The durable mode, in one process: journaling at acceptance, acks on every outcome,
replay before new messages, dead letters and snapshots across runtimes on one file.

A "restart" here is a second `Runtime` on the same journal file after the first
one stopped (a stop keeps what it did not handle) or after its journal was
abandoned; real `kill -9`s are in test_durable_crash.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors import (
    Codec,
    CodecError,
    Context,
    Dropped,
    JournalError,
    RecordedError,
    SQLiteJournal,
    UserActor,
)
from supervisors import Directive, RestartPolicy, Runtime
from supervisors.durable import _journaling as _durable
from tests.helpers import in_flight, ledger_ok, settle

# -- actors ----------------------------------------------------------------------------

LOG: list[tuple[Any, Any, int, bool]] = []  # (key, message, attempt, redelivered)
GATE: dict[str, asyncio.Event] = {}


class Recorder(UserActor):
    """Records what it handles; a message "block" waits until GATE["open"] is set."""

    async def on_message(self, message: Any, ctx: Context) -> Any:
        LOG.append((ctx.key, message, ctx.attempt, ctx.redelivered))
        if message == "block":
            await GATE["open"].wait()
        if message == "boom":
            raise ValueError("boom")
        return message


@pytest.fixture(autouse=True)
def _fresh() -> None:
    LOG.clear()
    GATE.clear()


def runtime(path: Path, **options: Any) -> Runtime:
    options.setdefault("idle_timeout", None)
    return Runtime(options.pop("actor", Recorder), store=path, **options)


def pending_rows(path: Path) -> list[tuple[Any, int]]:
    """(key, attempts) of the journal's unacknowledged rows, read with plain sqlite3."""
    # closing(): a connection's own `with` ends a transaction, it does not close it.
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT key, attempts FROM messages ORDER BY seq").fetchall()


def journal_counts(path: Path) -> tuple[int, int]:
    """(pending messages, dead letters) of a closed journal file."""
    with SQLiteJournal(path) as journal:
        return journal.pending_count(), len(journal.dead_letters())


# -- accepting ---------------------------------------------------------------------------


async def test_send_returns_once_the_message_is_in_the_file(tmp_path: Path) -> None:
    """`await rt.send` returns after the commit: another connection reads the row."""
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path) as rt:
        await rt.send("k", "block")  # stays pending while its handler waits
        await rt.send("k", "second")
        assert [key for key, _ in pending_rows(path)] == ["k", "k"]
        GATE["open"].set()
    assert journal_counts(path) == (0, 0)


async def test_send_without_a_store_returns_once_accepted() -> None:
    async with Runtime(Recorder, idle_timeout=None) as rt:
        await rt.send("k", 1)
        await settle(rt)
        assert "journal" not in rt.stats()
        assert rt.stats()["replayed"] == 0
    assert LOG == [("k", 1, 1, False)]


async def test_unencodable_or_oversized_message_is_refused_at_the_call(tmp_path: Path) -> None:
    """G9 with a store: CodecError at tell/ask/send, nothing accepted, nothing journaled."""
    async with runtime(tmp_path / "j.db", codec=Codec(max_size=200)) as rt:
        with pytest.raises(CodecError, match="object"):
            rt.tell("k", object())
        with pytest.raises(CodecError):
            rt.ask("k", "x" * 500)
        with pytest.raises(CodecError):
            await rt.send("k", {1, 2})
        assert rt.stats()["accepted"] == 0
        assert rt.pending("k") == 0
        rt.tell("k", "fits")
        await settle(rt)
    assert journal_counts(tmp_path / "j.db") == (0, 0)
    assert LOG == [("k", "fits", 1, False)]


async def test_an_int_key_the_journal_cannot_store_is_refused_at_the_call(tmp_path: Path) -> None:
    async with runtime(tmp_path / "j.db") as rt:
        with pytest.raises(CodecError, match="key"):
            rt.tell(2**63, "x")
        rt.tell(2**63 - 1, "fits")
        rt.tell(-(2**63), "fits too")
        await settle(rt)
        assert ledger_ok(rt.stats())
    assert journal_counts(tmp_path / "j.db") == (0, 0)


def test_unencodable_message_from_another_thread_is_refused_there(tmp_path: Path) -> None:
    with runtime(tmp_path / "j.db") as rt:
        with pytest.raises(CodecError):
            rt.tell("k", object())
        rt.tell("k", "ok")
        assert rt.ask("k", "ok2").get(timeout=5) == "ok2"
    assert [m for _, m, _, _ in LOG] == ["ok", "ok2"]


def test_send_from_another_thread_and_loop(tmp_path: Path) -> None:
    """`send` awaited on a loop of the caller's own, the runtime on its background thread."""
    path = tmp_path / "j.db"
    with runtime(path) as rt:
        asyncio.run(rt.send("k", "from-elsewhere"))
        rows = pending_rows(path)
        assert rows in ([("k", 0)], [("k", 1)], [])  # committed: pending, or handled already
        assert rt.ask("k", "after").get(timeout=5) == "after"
    assert [m for _, m, _, _ in LOG] == ["from-elsewhere", "after"]


# -- outcomes acknowledge ------------------------------------------------------------------


class Failing(UserActor):
    decider = staticmethod(lambda error: Directive.RESUME)

    def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "boom":
            raise ValueError("boom")
        return message


async def test_every_outcome_acknowledges(tmp_path: Path) -> None:
    """Handled, failed, interrupted, cleared, expired, withdrawn: nothing stays pending;
    the failed and dropped ones are journaled dead letters, as many as in memory."""
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path) as rt:
        rt.tell("a", 1)
        with pytest.raises(ValueError, match="boom"):
            await rt.ask("a", "boom")
        rt.tell("b", "block")
        await in_flight(rt, 1)
        waiting = rt.ask("b", "withdrawn")
        rt.tell("b", "cleared")
        rt.tell("b", "expired", ttl=0.001)
        waiting.cancel()
        rt.tell("b", "urgent", priority=1, interrupt=True, clear=True)  # interrupts "block"
        await asyncio.sleep(0.01)  # the ttl of "expired" (cleared already: no-op)
        await settle(rt)
        stats = rt.stats()
        assert ledger_ok(stats)
        in_memory = len(rt.dead_letters())
    assert stats["interrupted"] == 1
    assert journal_counts(path) == (0, in_memory)


async def test_failed_message_dead_letter_survives_a_restart_and_redelivers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with runtime(path, restart=RestartPolicy(max_retries=0)) as rt:
        with pytest.raises(ValueError, match="boom"):
            await rt.ask("k", "boom")
        rt.tell("k", "fine")
        await settle(rt)
    async with runtime(path) as rt:
        (letter,) = rt.dead_letters()
        assert (letter.key, letter.message, letter.reason) == ("k", "boom", "failed")
        assert isinstance(letter.error, RecordedError)
        assert str(letter.error) == "ValueError: boom"
        assert letter.journal_id is not None
        with pytest.raises(ValueError, match="boom"):
            await rt.redeliver(letter)  # it fails again: a new dead letter
        await settle(rt)
        assert len(rt.dead_letters()) == 1
    assert journal_counts(path) == (0, 1)


async def test_redelivered_letter_leaves_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path) as rt:
        rt.tell("k", "block")
        await in_flight(rt, 1)
        rt.tell("k", "y")
        rt.tell("k", "z", priority=1, clear=True)  # clears "y"
        GATE["open"].set()
        await settle(rt)
    async with runtime(path) as rt:
        (letter,) = rt.dead_letters()
        assert (letter.message, letter.reason) == ("y", "cleared")
        assert isinstance(letter.error, Dropped)
        assert await rt.redeliver(letter) == "y"
    assert journal_counts(path) == (0, 0)


# -- replay ------------------------------------------------------------------------------


async def test_stop_keeps_what_it_did_not_handle_and_the_next_start_replays_it_first(
    tmp_path: Path,
) -> None:
    """Waiting messages and the one cut short by the stop stay journaled; the next start
    runs them in order (the one in flight as a redelivery, attempt 2) before new ones."""
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    rt = runtime(path)
    await rt.start()
    rt.tell("k", "block")
    for n in range(1, 5):
        rt.tell("k", n)
    asked = rt.ask("k", "asked")
    await in_flight(rt, 1)
    summary = await rt.stop(drain=False)
    assert (summary.dropped_on_stop, summary.interrupted_on_stop) == (5, 1)
    with pytest.raises(Dropped):
        await asked
    assert len(pending_rows(path)) == 6
    LOG.clear()
    GATE["open"].set()
    async with runtime(path) as rt:
        rt.tell("k", "new")
        await settle(rt)
        assert rt.stats()["replayed"] == 6
        assert ledger_ok(rt.stats())
    assert LOG == [
        ("k", "block", 2, True),
        ("k", 1, 1, True),
        ("k", 2, 1, True),
        ("k", 3, 1, True),
        ("k", 4, 1, True),
        ("k", "asked", 1, True),  # an ask replays as a tell
        ("k", "new", 1, False),
    ]
    assert journal_counts(path) == (0, 0)


async def test_replay_keeps_priorities_and_per_key_order(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path) as rt:
        for key in ("a", "b"):
            rt.tell(key, "block")
        await in_flight(rt, 2)
        for n in range(3):
            rt.tell("a", f"a{n}")
            rt.tell("b", f"b{n}")
        rt.tell("a", "a-urgent", priority=2)
        await rt.stop(drain=False)
    LOG.clear()
    GATE["open"].set()
    async with runtime(path) as rt:
        await settle(rt)
    by_key = {key: [m for k, m, _, _ in LOG if k == key] for key in ("a", "b")}
    assert by_key == {
        "a": ["a-urgent", "block", "a0", "a1", "a2"],  # the lane order of one mailbox
        "b": ["block", "b0", "b1", "b2"],
    }


@dataclass(frozen=True)
class Update:
    chat: int
    text: str


async def test_registered_types_replay_as_themselves(tmp_path: Path) -> None:
    codec = Codec()
    codec.register(Update)
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path, codec=codec) as rt:
        rt.tell(1, "block")
        rt.tell(1, Update(1, "hi"))
        await in_flight(rt, 1)
        await rt.stop(drain=False)
    LOG.clear()
    GATE["open"].set()
    again = Codec()
    again.register(Update)
    async with runtime(path, codec=again) as rt:
        await settle(rt)
    assert [m for _, m, _, _ in LOG] == ["block", Update(1, "hi")]


async def test_a_record_that_no_longer_decodes_becomes_a_dead_letter(tmp_path: Path) -> None:
    """A type not registered any more: the message is dead-lettered ("undecodable") with
    its raw bytes and logged, never dropped silently, and the rest replays."""
    codec = Codec()
    codec.register(Update)
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path, codec=codec) as rt:
        rt.tell(1, "block")
        rt.tell(1, Update(1, "hi"))
        rt.tell(1, "plain")
        await in_flight(rt, 1)
        await rt.stop(drain=False)
    LOG.clear()
    GATE["open"].set()
    with structlog.testing.capture_logs() as logs:
        async with runtime(path) as rt:  # Update is not registered here
            await settle(rt)
            (letter,) = rt.dead_letters()
            assert ledger_ok(rt.stats())
    assert letter.reason == "undecodable"
    assert isinstance(letter.error, CodecError)
    assert isinstance(letter.message, bytes)
    assert [m for _, m, _, _ in LOG] == ["block", "plain"]
    assert any(e["event"] == "message_undecodable" for e in logs)


async def test_ttl_deadline_holds_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose ttl ran out while no process ran ends Dropped("expired")."""
    wall = [1000.0]
    monkeypatch.setattr(_durable, "_wall", lambda: wall[0])
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    async with runtime(path) as rt:
        rt.tell("k", "block")
        rt.tell("k", "stale", ttl=30)
        rt.tell("k", "fresh", ttl=3600)
        await in_flight(rt, 1)
        await rt.stop(drain=False)
    wall[0] += 60
    LOG.clear()
    GATE["open"].set()
    async with runtime(path) as rt:
        await settle(rt)
        (letter,) = rt.dead_letters()
        assert (letter.message, letter.reason) == ("stale", "expired")
    assert [m for _, m, _, _ in LOG] == ["block", "fresh"]


# -- snapshots -------------------------------------------------------------------------------


class Conversation(UserActor):
    """Keeps the history of a chat; snapshots it."""

    def __init__(self, key: str | int) -> None:
        super().__init__(key)
        self.history: list[Any] = []
        self.restored: Any = None

    def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "boom":
            raise RuntimeError("transient")
        if message == "forget":
            self.history = []
            return None
        self.history.append(message)
        return list(self.history)

    def snapshot(self) -> Any:
        return self.history or None

    def restore(self, state: Any) -> None:
        self.history = list(state)


async def test_state_survives_passivation_in_memory(clock: Any) -> None:
    async with Runtime(Conversation, idle_timeout=10.0, clock=clock) as rt:
        assert await rt.ask("u", "hi") == ["hi"]
        await clock.advance(11)
        assert rt.stats()["idle_stops"] == 1
        assert await rt.ask("u", "again") == ["hi", "again"]


async def test_state_survives_a_restart_after_a_transient_error(clock: Any) -> None:
    policy = RestartPolicy(backoff_min=0.1, jitter=0.0, max_retries=0)
    async with Runtime(Conversation, idle_timeout=None, clock=clock, restart=policy) as rt:
        await rt.ask("u", "one")
        with pytest.raises(RuntimeError):
            await rt.ask("u", "boom")
        await clock.advance(1)
        assert rt.stats()["restarts"] == 1
        assert await rt.ask("u", "two") == ["one", "two"]


async def test_state_survives_a_process_restart_and_none_forgets_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with runtime(path, actor=Conversation) as rt:
        await rt.ask("u", "one")
        await rt.ask("v", "x")
    async with runtime(path, actor=Conversation) as rt:
        assert await rt.ask("u", "two") == ["one", "two"]
        await rt.ask("v", "forget")  # its snapshot() returns None: the saved state goes
    async with runtime(path, actor=Conversation) as rt:
        assert await rt.ask("u", "three") == ["one", "two", "three"]
        assert await rt.ask("v", "y") == ["y"]


class BadSnapshot(Conversation):
    fail = False

    def snapshot(self) -> Any:
        if BadSnapshot.fail:
            return object()  # not encodable
        return super().snapshot()


async def test_failing_snapshot_is_logged_and_the_previous_state_stays(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    BadSnapshot.fail = False
    async with runtime(path, actor=BadSnapshot) as rt:
        await rt.ask("u", "one")
    BadSnapshot.fail = True
    with structlog.testing.capture_logs() as logs:
        async with runtime(path, actor=BadSnapshot) as rt:
            await rt.ask("u", "two")
    assert [e["key"] for e in logs if e["event"] == "snapshot_failed"] == ["u"]
    BadSnapshot.fail = False
    async with runtime(path, actor=BadSnapshot) as rt:
        assert await rt.ask("u", "three") == ["one", "three"]


class BadRestore(Conversation):
    decider = staticmethod(lambda error: Directive.STOP)

    def restore(self, state: Any) -> None:
        raise LookupError("state from an old version")


async def test_failing_restore_is_a_failure_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with runtime(path, actor=Conversation) as rt:
        await rt.ask("u", "one")
    with structlog.testing.capture_logs() as logs:
        async with runtime(path, actor=BadRestore) as rt:
            with pytest.raises(Dropped) as caught:
                await rt.ask("u", "two")
            assert caught.value.reason == "stopped"
    failed = [e for e in logs if e["event"] == "actor_failed"]
    assert [(e["phase"], e["directive"]) for e in failed] == [("restore", "stop")]


# -- the file -----------------------------------------------------------------------------


def test_a_corrupted_journal_is_refused_at_start_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x01" * 3000)

    async def main() -> None:
        rt = runtime(path)
        with pytest.raises(JournalError, match=r"j\.db"):
            await rt.start()

    asyncio.run(main())
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"  # left as it was


def test_bad_store_arguments_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Journal"):
        Runtime(Recorder, store=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        Runtime(Recorder, store="")
    with pytest.raises(TypeError, match="Codec"):
        Runtime(Recorder, store=tmp_path / "j.db", codec="msgpack")  # type: ignore[arg-type]


async def test_the_file_stays_flat_over_a_long_run(tmp_path: Path) -> None:
    """Acknowledged rows leave the file: after a warm-up round (the WAL reaches its
    working size), 40k more messages leave the files (journal and WAL) no bigger."""
    path = tmp_path / "j.db"
    store = SQLiteJournal(path, maintain_every=16)
    sizes = []
    async with Runtime(Recorder, store=store, idle_timeout=None) as rt:
        for _ in range(8):
            for n in range(6000):
                rt.tell(n % 100, "x" * 100)
            await settle(rt, 30)
            store.flush()
            sizes.append(files_size(tmp_path))
    assert max(sizes[2:]) <= sizes[1] * 1.2, sizes


def files_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


class BrokenJournal:
    """A store whose writes fail, as a full disk would make them."""

    def __init__(self, inner: SQLiteJournal) -> None:
        self.inner = inner
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, records: Any) -> Any:
        if self.fail:
            raise JournalError("disk full (simulated)")
        return self.inner.append(records)


async def test_a_broken_journal_refuses_later_messages_at_the_call(tmp_path: Path) -> None:
    store = BrokenJournal(SQLiteJournal(tmp_path / "j.db"))
    with structlog.testing.capture_logs() as logs:
        async with Runtime(Recorder, store=store, idle_timeout=None) as rt:  # type: ignore[arg-type]
            rt.tell("k", 1)
            await settle(rt)
            store.fail = True
            rt.tell("k", 2)  # accepted: its pass is flushed after the call returned
            await settle(rt)
            with pytest.raises(JournalError, match="disk full"):
                rt.tell("k", 3)
            assert rt.stats()["journal"]["broken"]
    assert [m for _, m, _, _ in LOG] == [1, 2]  # what was accepted is still handled
    assert [e["event"] for e in logs if e["event"] == "journal_failed"] == ["journal_failed"]


def test_threads_telling_while_the_runtime_stops_lose_nothing_confirmed(tmp_path: Path) -> None:
    """Every tell that returned is handled in this run or kept for the next one."""
    path = tmp_path / "j.db"
    sent: list[int] = []
    lock = threading.Lock()
    rt = runtime(path)
    rt.__enter__()

    def produce(base: int) -> None:
        for n in range(base, base + 2000):
            try:
                rt.tell(n % 7, n)
            except Exception:
                return
            with lock:
                sent.append(n)

    threads = [threading.Thread(target=produce, args=(i * 10_000,)) for i in range(3)]
    for t in threads:
        t.start()
    rt.__exit__(None, None, None)
    for t in threads:
        t.join()
    first = {m for _, m, _, _ in LOG}
    with runtime(path) as again:
        again.stop().get(timeout=30)
    handled = {m for _, m, _, _ in LOG}
    assert set(sent) <= handled, sorted(set(sent) - handled)[:10]
    assert len(first) <= len(handled)


# -- the ways a run ends ------------------------------------------------------------------


def test_a_loop_that_ends_without_stop_keeps_the_messages(tmp_path: Path) -> None:
    """`asyncio.run` returning with the runtime still running: the runtime settles what it
    holds, closes its journal, and the next start handles all of it."""
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()

    async def forgetful() -> None:
        rt = runtime(path)
        await rt.start()
        rt.tell("k", "block")
        for n in range(3):
            rt.tell("k", n)
        await in_flight(rt, 1)
        # returns without rt.stop()

    asyncio.run(forgetful())
    assert len(pending_rows(path)) == 4
    LOG.clear()

    async def again() -> None:
        GATE["open"] = asyncio.Event()
        GATE["open"].set()
        async with runtime(path) as rt:
            await settle(rt)

    asyncio.run(again())
    assert [(m, a, r) for _, m, a, r in LOG] == [
        ("block", 2, True),
        (0, 1, True),
        (1, 1, True),
        (2, 1, True),
    ]


class Chain(UserActor):
    """Each message tells the next key; during the stop's close those are kept."""

    async def on_message(self, message: Any, ctx: Context) -> Any:
        LOG.append((ctx.key, message, ctx.attempt, ctx.redelivered))
        if message == "block":
            try:
                await GATE["open"].wait()
            finally:
                ctx.tell("after", f"told-on-attempt-{ctx.attempt}")
        return message


async def test_a_handlers_tell_after_the_drain_is_kept_for_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()
    rt = runtime(path, actor=Chain)
    await rt.start()
    rt.tell("k", "block")
    await in_flight(rt, 1)
    summary = await rt.stop(drain=False)
    assert summary.interrupted_on_stop == 1
    LOG.clear()
    GATE["open"].set()
    async with runtime(path, actor=Chain) as rt:
        await settle(rt)
    # The first run's tell (made while the stop closed) was kept; the replayed "block"
    # (a redelivery, attempt 2) tells again.
    assert sorted(m for _, m, _, _ in LOG) == ["block", "told-on-attempt-1", "told-on-attempt-2"]


async def test_a_message_that_keeps_killing_its_process_becomes_a_dead_letter(
    tmp_path: Path,
) -> None:
    """Started `max_deliveries` times without an outcome (each run ended while it ran):
    at the next start it is dead-lettered ("poison") and the key's next message runs."""
    path = tmp_path / "j.db"
    GATE["open"] = asyncio.Event()  # never set: "block" never finishes
    for run in range(2):
        rt = runtime(path, max_deliveries=2)
        await rt.start()
        if run == 0:
            rt.tell("k", "block")
            rt.tell("k", "after")
        await in_flight(rt, 1)
        await rt.stop(drain=False)
    LOG.clear()
    with structlog.testing.capture_logs() as logs:
        async with runtime(path, max_deliveries=2) as rt:
            await settle(rt)
            (letter,) = rt.dead_letters()
    assert (letter.message, letter.reason, letter.attempts) == ("block", "poison", 2)
    assert [m for _, m, _, _ in LOG] == ["after"]
    assert any(e["event"] == "message_poisonous" for e in logs)
    assert journal_counts(path) == (0, 1)
