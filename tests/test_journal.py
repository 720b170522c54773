"""The SQLite journal: order, group commit, durability through kill -9, snapshots,
dead letters, a flat file size, and a clear error for anything that is not a journal."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest

from actors._errors import InorderError, JournalClosed, JournalError
from actors.journal._seam import PendingRecord
from actors.journal._sqlite import SCHEMA_VERSION, SQLiteJournal

ROOT = Path(__file__).resolve().parent.parent


def file_size(path: Path) -> int:
    """The journal's size on disk: the database and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


def test_append_ack_pending_in_acceptance_order_across_keys(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db") as j:
        records = [(f"user:{i % 3}", f"m{i}".encode()) for i in range(12)] + [(7, b"int key")]
        accepted = j.append(records)
        assert accepted.seqs == list(range(1, 14))
        accepted.committed.result(5)
        j.ack([2, 5, 9]).result(5)
        pending = list(j.pending())
        assert [p.seq for p in pending] == [s for s in range(1, 14) if s not in (2, 5, 9)]
        by_seq = dict(zip(accepted.seqs, records, strict=True))
        for p in pending:
            assert (p.key, p.data) == by_seq[p.seq]
            assert p.attempts == 0
            assert not p.started
        assert pending[-1].key == 7
        assert type(pending[-1].key) is int
        # Per key, the order is the order of the appends.
        for key in ("user:0", "user:1", "user:2"):
            mine = [p.data for p in pending if p.key == key]
            assert mine == [d for k, d in records if k == key and d not in (b"m1", b"m4", b"m8")]
        assert j.pending_count() == 10


def test_seqs_never_go_back_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        seqs = j.append([("a", b"1"), ("a", b"2")]).seqs
        j.ack(seqs)
    with SQLiteJournal(path) as j:
        assert list(j.pending()) == []
        assert j.append([("a", b"3")]).seqs == [3]
        dead_id, _ = j.add_dead_letter("a", b"x", "failed")
    with SQLiteJournal(path) as j:
        j.remove_dead_letters([dead_id]).result(5)
        assert j.add_dead_letter("a", b"y", "failed")[0] == dead_id + 1


def test_mark_started_counts_attempts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path, max_delay_ms=50) as j:
        (s1, s2) = j.append([("k", b"1"), ("k", b"2")]).seqs
        j.mark_started([s1])  # in the batch that appends it
        j.flush()
        j.mark_started([s1])  # on a committed row
        j.mark_started([s2]).result(5)
    with SQLiteJournal(path) as j:
        assert list(j.pending()) == [
            PendingRecord(s1, "k", b"1", 2),
            PendingRecord(s2, "k", b"2", 1),
        ]
        assert all(p.started for p in j.pending())


def test_mark_started_takes_a_batch(tmp_path: Path) -> None:
    """One call marks many messages, in one operation; a seq listed twice counts twice,
    an unknown one is ignored, an empty batch is a no-op."""
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        seqs = j.append([("a", b"1"), ("b", b"2"), ("a", b"3")]).seqs
        j.flush()
        ops = j.stats()["ops"]
        j.mark_started([seqs[0], seqs[2], seqs[0], 999]).result(5)
        assert j.stats()["ops"] == ops + 1
        j.mark_started([]).result(5)
        j.mark_started(iter([seqs[1]])).result(5)  # any iterable of seqs
    with SQLiteJournal(path) as j:
        assert [(p.seq, p.attempts) for p in j.pending()] == [
            (seqs[0], 2),
            (seqs[1], 1),
            (seqs[2], 1),
        ]


class Statements:
    """The SQL statements the writer runs (one per row of an executemany)."""

    def __init__(self, journal: SQLiteJournal) -> None:
        self.seen: list[str] = []
        journal._writer_db.set_trace_callback(self.seen.append)

    def on_messages(self) -> list[str]:
        """The statements that wrote the messages table, forgotten once returned."""
        written = [s for s in self.seen if "messages" in s]
        self.seen.clear()  # in place: the trace callback appends to this very list
        return written


def one_batch(j: SQLiteJournal, *calls: Callable[[], object]) -> None:
    """Make `calls` in one batch: the writer waits a minute for more operations after
    the first, and the flush at the end cuts that wait short."""
    for call in calls:
        call()
    j.flush(timeout=5)


def test_started_and_acked_in_one_batch_costs_no_update(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path, max_delay_ms=60_000) as j:
        seqs = j.append([("k", b"1"), ("k", b"2"), ("k", b"3")]).seqs
        j.flush()
        statements = Statements(j)
        one_batch(
            j,
            lambda: j.mark_started(seqs),
            lambda: j.ack(seqs[:2]),
        )
        written = statements.on_messages()
        assert [s.split()[0] for s in written] == ["UPDATE", "DELETE", "DELETE"], written
        assert f"WHERE seq = {seqs[2]}" in written[0]
        # A start after the ack of the same message, in one batch: no update either.
        one_batch(j, lambda: j.ack([seqs[2]]), lambda: j.mark_started([seqs[2]]))
        assert [s.split()[0] for s in statements.on_messages()] == ["DELETE"]
        assert j.pending_count() == 0


def test_appended_started_and_acked_in_one_batch_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path, max_delay_ms=60_000) as j:
        statements = Statements(j)
        kept: list[int] = []
        fast: list[int] = []
        one_batch(
            j,
            lambda: fast.extend(j.append([("k", b"fast"), ("k", b"fast too")]).seqs),
            lambda: kept.extend(j.append([("k", b"slow")]).seqs),
            lambda: j.mark_started(fast + kept),
            lambda: j.ack(fast),
        )
        written = statements.on_messages()
        # The message still pending is inserted, already started once; the others never
        # reach the table (only the seq counter moves past them).
        assert written == [f"INSERT INTO messages VALUES ({kept[0]}, 'k', x'{b'slow'.hex()}', 1)"]
        # Appended and acknowledged, without a start: nothing either (as before).
        one_batch(j, lambda: j.ack(j.append([("k", b"x")]).seqs))
        assert statements.on_messages() == []
    with SQLiteJournal(path) as j:
        assert [(p.seq, p.data, p.attempts) for p in j.pending()] == [(kept[0], b"slow", 1)]
        assert j.append([("k", b"next")]).seqs == [kept[0] + 2]  # seqs never go back


def test_many_appends_from_threads_commit_in_few_transactions(tmp_path: Path) -> None:
    threads, per_thread = 4, 500
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=50) as j:
        futures: list[Future[None]] = []
        start = threading.Barrier(threads)

        def sender(n: int) -> None:
            start.wait()
            for i in range(per_thread):
                futures.append(j.append([(f"t{n}", str(i).encode())]).committed)

        workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        j.flush()
        stats = j.stats()
        assert stats["ops"] == threads * per_thread
        assert 1 <= stats["commits"] <= 40, stats  # 2,000 appends in a few transactions
        assert all(f.done() and f.exception() is None for f in futures)
        pending = list(j.pending())
        assert len(pending) == threads * per_thread
        for n in range(threads):
            assert [p.data for p in pending if p.key == f"t{n}"] == [
                str(i).encode() for i in range(per_thread)
            ]


def test_batch_max_one_is_one_transaction_per_operation(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", batch_max=1) as j:
        for i in range(50):
            j.append([("k", str(i).encode())])
        j.flush()
        assert j.stats()["commits"] == 50


def test_acked_in_the_batch_that_appends_it_is_never_written(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=200) as j:
        seqs = j.append([("k", b"fast")]).seqs
        kept = j.append([("k", b"slow")]).seqs
        done = j.ack(seqs)
        done.result(5)
        assert [p.seq for p in j.pending()] == kept


def test_flush_waits_for_everything_queued_before(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=30) as j:
        futures = [j.append([("k", b"x")]).committed for _ in range(100)]
        j.flush()
        assert all(f.done() for f in futures)
        j.flush()  # nothing queued: returns at once


def test_flush_does_not_wait_for_max_delay(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=60_000) as j:
        accepted = j.append([("k", b"x")])
        j.flush(timeout=5)  # well before the minute the writer would wait for more
        assert accepted.committed.done()


def test_commit_futures_cannot_be_cancelled(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=200) as j:
        first = j.append([("k", b"1")])
        second = j.append([("k", b"2")])
        assert not first.committed.cancel()
        second.committed.result(5)
        first.committed.result(5)
        assert [p.data for p in j.pending()] == [b"1", b"2"]


def test_commit_futures_resolve_under_a_load_that_never_lets_up(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", batch_max=8, max_queued=1000) as j:
        stop = threading.Event()

        def producer() -> None:
            while not stop.is_set():
                j.append([("k", b"x")])

        worker = threading.Thread(target=producer)
        worker.start()
        try:
            for _ in range(20):
                j.append([("k", b"mine")]).committed.result(5)
            assert worker.is_alive()
        finally:
            stop.set()
            worker.join()


def test_a_failed_transaction_breaks_the_journal_clearly(tmp_path: Path) -> None:
    j = SQLiteJournal(tmp_path / "j.db")
    j.append([("k", b"1")]).committed.result(5)
    j._writer_db.close()  # the writer's next transaction fails, as on an I/O error
    failed = j.append([("k", b"2")]).committed
    with pytest.raises(JournalError, match=r"transaction .* failed"):
        failed.result(5)
    with pytest.raises(JournalError, match="broken"):
        j.append([("k", b"3")])
    j.close()
    with SQLiteJournal(tmp_path / "j.db") as again:
        assert [p.data for p in again.pending()] == [b"1"]


async def test_commit_future_is_awaitable_from_asyncio(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db") as j:
        accepted = j.append([("k", b"x")])
        await asyncio.wait_for(asyncio.wrap_future(accepted.committed), 5)
        assert accepted.committed.done()


def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        seqs = j.append([("a", b"1"), ("b", b"2"), ("a", b"3")]).seqs
        j.ack([seqs[1]])
        j.mark_started([seqs[0]])
        j.save_snapshot("a", b"state-a1")
        j.save_snapshot("a", b"state-a2")
        j.save_snapshot(5, b"state-5")
        j.save_snapshot("gone", b"x")
        j.drop_snapshot("gone")
        dead_id, _ = j.add_dead_letter("b", b"2-bis", "handler failed 3 times")
    with SQLiteJournal(path) as j:
        assert [(p.seq, p.key, p.data, p.attempts) for p in j.pending()] == [
            (seqs[0], "a", b"1", 1),
            (seqs[2], "a", b"3", 0),
        ]
        assert j.load_snapshot("a") == b"state-a2"
        assert j.load_snapshot(5) == b"state-5"
        assert j.load_snapshot("5") is None  # keys keep their type
        assert j.load_snapshot("gone") is None
        (dead,) = j.dead_letters()
        assert (dead.id, dead.key, dead.data, dead.reason) == (
            dead_id,
            "b",
            b"2-bis",
            "handler failed 3 times",
        )
        j.remove_dead_letters([dead.id])
        assert j.dead_letters() == []


def test_snapshot_reads_see_queued_writes(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db", max_delay_ms=300) as j:
        j.save_snapshot("k", b"v1").result(5)
        saved = j.save_snapshot("k", b"v2")
        assert not saved.done()  # still waiting for its batch
        assert j.load_snapshot("k") == b"v2"
        j.drop_snapshot("k")
        assert j.load_snapshot("k") is None
        j.save_snapshot("k", b"v3")
        j.flush()
        assert j.load_snapshot("k") == b"v3"


def test_dead_letter_with_ack_is_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        (seq,) = j.append([("k", b"poison")]).seqs
        j.flush()
        commits = j.stats()["commits"]
        _, done = j.add_dead_letter("k", b"poison", "crashed", ack_seq=seq)
        done.result(5)
        assert j.stats()["commits"] == commits + 1
        assert list(j.pending()) == []
        assert [d.data for d in j.dead_letters()] == [b"poison"]


def test_closed_journal_refuses_every_call(tmp_path: Path) -> None:
    j = SQLiteJournal(tmp_path / "j.db")
    j.close()
    j.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: j.append([("k", b"x")]),
        lambda: j.ack([1]),
        lambda: j.mark_started([1]),
        lambda: list(j.pending()),
        lambda: j.save_snapshot("k", b"x"),
        lambda: j.load_snapshot("k"),
        lambda: j.drop_snapshot("k"),
        lambda: j.add_dead_letter("k", b"x", "r"),
        j.dead_letters,
        lambda: j.remove_dead_letters([1]),
        j.flush,
    ]
    for call in calls:
        with pytest.raises(JournalClosed, match="closed"):
            call()
    assert issubclass(JournalClosed, JournalError)
    assert issubclass(JournalError, InorderError)


def test_bad_arguments_are_refused_before_anything_is_accepted(tmp_path: Path) -> None:
    with SQLiteJournal(tmp_path / "j.db") as j:
        for bad in [("", b"x"), (2**63, b"x"), (True, b"x"), ("k", "not bytes"), (None, b"x")]:
            with pytest.raises(ValueError, match="journal"):
                j.append([("ok", b"1"), bad])  # type: ignore[list-item]
        assert list(j.pending()) == []
        assert j.append([("k", b"x")]).seqs == [1]
    with pytest.raises(ValueError, match="sync"):
        SQLiteJournal(tmp_path / "other.db", sync="sometimes")  # type: ignore[arg-type]


# -- kill -9 ------------------------------------------------------------------------------

CHILD = """
import os, random, signal, sys
sys.path.insert(0, sys.argv[1])
from actors.journal._sqlite import SQLiteJournal

path, seed, kill_after, sync = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(seed)
j = SQLiteJournal(path, sync=sync, max_delay_ms=rng.choice([0, 1, 5]))
committed = 0
unconfirmed = []
while True:
    key = "user:%d" % rng.randrange(5)
    n = rng.randrange(1, 4)
    accepted = j.append([(key, b"%s/%d" % (key.encode(), i)) for i in range(n)])
    if rng.random() < 0.3:
        unconfirmed.append(accepted)  # in flight, not confirmed: may or may not survive
    else:
        accepted.committed.result()
        print("C", *accepted.seqs, flush=True)
        committed += 1
    if rng.random() < 0.3 and len(unconfirmed) > 2:
        old = unconfirmed.pop(0)
        old.committed.result()
        j.ack(old.seqs).result()
        print("A", *old.seqs, flush=True)
    if committed >= kill_after:
        # More in flight, then die without closing anything.
        for _ in range(rng.randrange(0, 20)):
            j.append([(key, b"late")])
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("seed", range(10))
def test_every_confirmed_append_survives_kill_9(tmp_path: Path, seed: int) -> None:
    sync = "full" if seed % 3 == 2 else "normal"
    path = tmp_path / "j.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    kill_after = random.Random(seed).randrange(1, 300)
    done = subprocess.run(
        [sys.executable, str(script), str(ROOT), str(path), str(seed), str(kill_after), sync],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    confirmed: set[int] = set()
    acked: set[int] = set()
    for line in done.stdout.splitlines():
        kind, *numbers = line.split()
        (confirmed if kind == "C" else acked).update(int(s) for s in numbers)
    assert confirmed
    with SQLiteJournal(path) as j:
        pending = list(j.pending())
        seqs = [p.seq for p in pending]
        assert seqs == sorted(seqs)
        assert confirmed - acked <= set(seqs), "a confirmed, unacknowledged append was lost"
        assert not acked & set(seqs), "an acknowledged message came back"
        for p in pending:  # nothing that was never appended
            assert p.data == b"late" or p.data.startswith(str(p.key).encode() + b"/")
        # It goes on from there.
        assert j.append([("k", b"x")]).seqs[0] > max(confirmed | acked)


# -- bounded size -------------------------------------------------------------------------


def test_file_size_stays_flat_over_a_long_run_of_append_and_ack(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    sizes = []
    payload = b"x" * 400
    with SQLiteJournal(path, maintain_every=100) as j:
        backlog = j.append([(f"u{i}", payload) for i in range(200)]).seqs  # always pending
        for round_ in range(400):  # 20,000 append + ack cycles, 50 per round
            accepted = j.append([(f"u{i % 37}", payload) for i in range(50)])
            accepted.committed.result(5)
            j.ack(accepted.seqs).result(5)
            if round_ % 20 == 19:
                sizes.append((path.stat().st_size, file_size(path)))
        assert j.pending_count() == len(backlog)
        assert j.stats()["maintenances"] >= 5
    # The database stays the size of the backlog; the WAL is bounded by the
    # checkpoints (SQLite's automatic one at 1,000 pages, and the journal's own).
    assert max(db for db, _ in sizes) < 512 * 1024, sizes
    assert max(total for _, total in sizes) < 6 * 1024 * 1024, sizes
    # No trend: in the second half of the run, the database is no bigger than in the
    # first (the WAL goes up and down with the checkpoints, whatever the run's length).
    half = len(sizes) // 2
    assert max(db for db, _ in sizes[half:]) <= max(db for db, _ in sizes[:half]), sizes
    assert file_size(path) < 256 * 1024  # closed: WAL truncated, the backlog alone


def test_file_shrinks_after_a_burst_is_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        seqs = j.append([("k", b"y" * 1000) for _ in range(3000)]).seqs
        j.flush()
        j.close()
    peak = file_size(path)
    assert peak > 3_000_000
    with SQLiteJournal(path) as j:
        j.ack(seqs)
    assert file_size(path) < peak // 10


# -- files that are not a journal ---------------------------------------------------------


def make_journal(path: Path, n: int = 2000) -> None:
    with SQLiteJournal(path) as j:
        j.append([(f"user:{i % 10}", b"z" * 300) for i in range(n)])
        j.save_snapshot("user:1", b"s")


def assert_refused(path: Path, *phrases: str) -> JournalError:
    before = path.read_bytes()
    with pytest.raises(JournalError) as caught:
        SQLiteJournal(path)
    message = str(caught.value)
    assert str(path) in message
    assert "move it aside" in message
    assert "lost" in message
    for phrase in phrases:
        assert phrase in message
    assert path.read_bytes() == before  # never started empty over it
    return caught.value


def test_garbage_over_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    make_journal(path)
    with path.open("r+b") as f:
        f.write(os.urandom(100))
    assert_refused(path, "not an SQLite database")


def test_garbage_inside_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    make_journal(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(4096 * 2)  # past the header: the pages of the tables
        f.write(random.Random(1).randbytes(size - 4096 * 3))
    assert_refused(path, "corrupted")


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_truncated_journal_is_refused(tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "j.db"
    make_journal(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(int(size * fraction) // 4096 * 4096 + 123)
    assert_refused(path)


def test_truncated_to_nothing_or_to_less_than_a_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    make_journal(path)
    data = path.read_bytes()
    path.write_bytes(data[:60])
    assert_refused(path, "truncated")
    path.write_bytes(b"")
    assert_refused(path, "empty")


def test_a_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the messages you are looking for\n" * 50)
    assert_refused(path, "not an SQLite database")


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    assert_refused(path, "not an inorder journal")


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
def test_another_schema_version_is_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "j.db"
    make_journal(path, n=10)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()
    assert_refused(path, f"schema version is {version}", f"reads version {SCHEMA_VERSION}")


def test_one_journal_at_a_time_per_file(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SQLiteJournal(path) as j:
        j.append([("k", b"x")])
        with pytest.raises(JournalError, match="in use by another SQLiteJournal"):
            SQLiteJournal(path)
        j.append([("k", b"y")]).committed.result(5)  # the first one is unaffected
    with SQLiteJournal(path) as j:
        assert [p.data for p in j.pending()] == [b"x", b"y"]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="directory does not exist"):
        SQLiteJournal(tmp_path / "nowhere" / "j.db")
