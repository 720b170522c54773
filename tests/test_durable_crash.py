"""Durable mode through kill -9: a child process runs the runtime on the SQLite store
under load from eight keys and is killed with SIGKILL at seeded random instants.

Each test is one chain on one journal file: `KILLS_PER_CHAIN` children in turn
recover what the previous one left, send more and are killed; a last child
recovers, sends a little more to every key and stops cleanly. The children append
what they did to a facts file (see tests/_durable_child.py), which the checks
below read once the chain is over:

* every message whose acceptance was confirmed is handled at least once;
* per key, the order of first handling is the order of acceptance, and within one
  process a key's messages are handled in strictly increasing order (replay before
  anything new, no message twice);
* nothing is handled that was never sent;
* `ctx.redelivered` is True exactly for the messages accepted by an earlier process,
  and `ctx.attempt` never counts more starts than the handler had;
* `stats()["replayed"]` of the last child counts the redelivered messages it handled;
* a restored state is the last one saved, except for saves still in the journal's
  commit window when the kill came (`check_snapshots` says how that is decided);
* after the clean stop, the journal holds no message, no dead letter, and each key's
  last snapshot.

The default is 50 kill points (5 chains of 10); INORDER_CRASH_POINTS=500 runs
more, INORDER_CRASH_SEED picks another series of seeds. A failure names the seed
of its chain; the chain's kill instants, and so the kill points, follow from it
(what the child did until then is up to the scheduler).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import actors
from actors import Codec, SQLiteJournal

CHILD = Path(__file__).resolve().parent / "_durable_child.py"
# The directory the parent imported the package from: the source tree, or the
# compiled copy the suite also runs against (PYTHONPATH with `python -P`).
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent

KILLS_PER_CHAIN = 10
POINTS = int(os.environ.get("INORDER_CRASH_POINTS", "50"))
CHAINS = max(1, -(-POINTS // KILLS_PER_CHAIN))
BASE_SEED = int(os.environ.get("INORDER_CRASH_SEED", "0"))
MAX_KILL_DELAY = 0.3  # seconds after the child reports that it runs
START_TIMEOUT = 20.0
FINAL_TIMEOUT = 30.0


def parse_key(token: str) -> str | int:
    """The key a token of the facts file stands for (`7` is the int key)."""
    return int(token) if token.isdigit() else token


@dataclass
class Save:
    """One snapshot() call (or one restore()): the state, in which process, where in the file."""

    run: int
    tag: str
    count: int
    last: int
    at: float  # time.monotonic() in the child when it was saved (0.0 for a restore)
    line: int


@dataclass
class Facts:
    """The facts file of a chain, parsed."""

    intents: dict[tuple[str | int, int], int] = field(default_factory=dict)  # -> run
    intent_lines: dict[tuple[str | int, int], int] = field(default_factory=dict)
    confirmed: set[tuple[str | int, int]] = field(default_factory=set)
    # (run, key, n, attempt, redelivered), in the order the handlers started.
    handled: list[tuple[int, str | int, int, int, bool]] = field(default_factory=list)
    # Per key, in order: ("S", Save) | ("R", Save) | ("A", run, tag).
    lifecycle: dict[str | int, list[tuple[object, ...]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    impossible: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_facts(path: Path) -> Facts:
    """Parse the lines the children appended (each with one write: never cut by a kill)."""
    facts = Facts()
    lines = path.read_text(encoding="ascii").split("\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        kind, run_s, token, *rest = line.split()
        run, key = int(run_s), parse_key(token)
        if kind == "I":
            message = (key, int(rest[0]))
            if message in facts.intents:
                facts.problems.append(f"line {number}: message {message} announced twice")
            facts.intents[message] = run
            facts.intent_lines[message] = number
        elif kind == "C":
            facts.confirmed.add((key, int(rest[0])))
        elif kind == "H":
            n, attempt, redelivered = (int(x) for x in rest)
            facts.handled.append((run, key, n, attempt, bool(redelivered)))
        elif kind in ("S", "R"):
            tag, count, last = rest[0], int(rest[1]), int(rest[2])
            at = float(rest[3]) if kind == "S" else 0.0
            facts.lifecycle[key].append((kind, Save(run, tag, count, last, at, number)))
        elif kind == "A":
            facts.lifecycle[key].append(("A", run, rest[0]))
        else:
            facts.impossible.append(line)
    return facts


def check_messages(facts: Facts) -> dict[str, int]:
    """The delivery checks; returns counts for the report."""
    problems = facts.problems
    first: dict[str | int, list[int]] = defaultdict(list)
    seen: set[tuple[str | int, int]] = set()
    starts: dict[tuple[str | int, int], int] = defaultdict(int)  # handler starts in earlier runs
    last_in_run: dict[tuple[int, str | int], int] = {}
    redeliveries = 0
    for run, key, n, attempt, redelivered in facts.handled:
        message = (key, n)
        accepted_in = facts.intents.get(message)
        if accepted_in is None:
            problems.append(f"{message} handled in run {run} but never sent")
            continue
        if message not in seen:
            seen.add(message)
            if first[key] and n < first[key][-1]:
                problems.append(
                    f"key {key!r}: {n} first handled (run {run}) after {first[key][-1]}"
                )
            first[key].append(n)
        before = last_in_run.get((run, key), 0)
        if n <= before:
            problems.append(f"key {key!r}, run {run}: {n} handled after {before}")
        last_in_run[run, key] = n
        if redelivered != (accepted_in < run):
            problems.append(
                f"{message} accepted in run {accepted_in}, handled in run {run} "
                f"with redelivered={redelivered}"
            )
        earlier = starts[message]  # at most one per earlier run (checked above)
        if redelivered:
            redeliveries += 1
            if not 1 <= attempt <= 1 + earlier:
                problems.append(
                    f"{message} replayed in run {run} at attempt {attempt}, "
                    f"after {earlier} handler start(s)"
                )
        elif attempt != 1:
            problems.append(f"{message} handled in run {run} at attempt {attempt}")
        starts[message] += 1
    lost = sorted(facts.confirmed - seen)
    if lost:
        problems.append(f"{len(lost)} confirmed message(s) never handled: {lost[:10]}")
    problems.extend(f"in the child: {line}" for line in facts.impossible)
    return {
        "sent": len(facts.intents),
        "confirmed": len(facts.confirmed),
        "handled": len(facts.handled),
        "redeliveries": redeliveries,
    }


def check_snapshots(facts: Facts, kills: dict[int, float]) -> tuple[dict[str | int, Save], int]:
    """Every incarnation starts from the last state saved for its key, as far as it is durable.

    Within a process, a new incarnation restores exactly the last save (the journal's
    reads see its queued writes). The first incarnation of a key after a crash restores
    the last save made before the crash, except that the newest saves may have been lost
    if they were still in the journal's commit window when SIGKILL came; then it restores
    the newest save before them (nothing, if there was none).

    A save is out of the commit window (*covered*) once a message accepted after it (its
    intent line comes after the save's line, in the same process) was confirmed durable:
    the runtime hands the state to the journal when `snapshot()` returns, the journal
    applies and commits its writes in the order of the calls, and a message reaches it at
    the end of the loop pass that accepted it, so the commit of that message covers the
    save. A save some later process restored is durable too. So the rule checked is: the
    restored save is the newest covered one or a newer one, and the saves after it are
    lost for good (later restores are checked against the saves before them). In
    practice a kill loses at most the newest save of a key: a killed child saves a key's
    state only on an idle stop, at least `idle_timeout` (>= 50 ms) after the message
    before, whose commit takes a few ms.

    Returns the last save per key, and how many saves the kills lost.
    """
    problems = facts.problems
    # Per process, the line of the last intent whose message was confirmed.
    covered_up_to: dict[int, int] = defaultdict(int)
    for message in facts.confirmed:
        run, line = facts.intents[message], facts.intent_lines[message]
        covered_up_to[run] = max(covered_up_to[run], line)
    lost = 0
    final: dict[str | int, Save] = {}
    for key, events in facts.lifecycle.items():
        saves: list[Save] = []
        by_tag: dict[str, Save] = {}
        durable = -1  # the index in `saves` of the newest save known to be durable
        activated: set[int] = set()
        for event in events:
            if event[0] == "S":
                save = event[1]
                assert isinstance(save, Save)
                saves.append(save)
                by_tag[save.tag] = save
                if save.run not in kills or covered_up_to[save.run] > save.line:
                    durable = len(saves) - 1
            elif event[0] == "R":
                got = event[1]
                assert isinstance(got, Save)
                saved = by_tag.get(got.tag)
                if saved is None or (saved.count, saved.last) != (got.count, got.last):
                    problems.append(
                        f"key {key!r}, run {got.run}: restored {got} that was never saved"
                    )
            else:
                _, run, tag = event
                assert isinstance(run, int)
                assert isinstance(tag, str)
                tags = ["-"] + [save.tag for save in saves]  # tags[i + 1] is saves[i]
                if run in activated:  # an idle stop and a new incarnation in one process
                    if tag != tags[-1]:
                        problems.append(
                            f"key {key!r}, run {run}: restored {tag}, the last save is {tags[-1]}"
                        )
                elif tag in tags[durable + 1 :]:
                    restored = tags.index(tag) - 1
                    lost += len(saves) - 1 - restored
                    del saves[restored + 1 :]
                    durable = restored
                else:
                    gone = saves[-1]
                    when = (
                        f"{kills[gone.run] - gone.at:.3f} s before run {gone.run} was killed"
                        if gone.run in kills
                        else "in a process that stopped cleanly"
                    )
                    problems.append(
                        f"key {key!r}, first incarnation of run {run}: restored {tag}; "
                        f"the saves since the last durable one: {tags[durable + 1 :]}; "
                        f"the last was made {when} (line {gone.line})"
                    )
                activated.add(run)
        if saves:
            final[key] = saves[-1]
    return final, lost


class Child:
    """One child process of a chain; its output goes to a log file, its signals to a pipe."""

    def __init__(self, tmp: Path, run: int, seed: int, mode: str) -> None:
        self.log_path = tmp / f"child-{run}.log"
        read_fd, write_fd = os.pipe()
        self.signals = read_fd
        self.buffer = b""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    str(CHILD),
                    str(PACKAGE_DIR),
                    str(tmp / "journal.db"),
                    str(tmp / "facts.log"),
                    str(write_fd),
                    str(run),
                    str(seed),
                    mode,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The next line on the signal pipe that starts with `prefix` ("" if none in time)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.decode().startswith(prefix):
                    return line.decode()
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.signals], [], [], left)[0]:
                return ""
            chunk = os.read(self.signals, 4096)
            if not chunk:  # the child exited
                return ""
            self.buffer += chunk

    def kill(self) -> float:
        """SIGKILL this child (by its own pid) and reap it; returns the kill instant."""
        at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        return at

    def close(self) -> None:
        """Kill the child if it still runs, and close the pipe."""
        if self.process.poll() is None:
            self.kill()
        os.close(self.signals)

    def output(self) -> str:
        """The end of what the child printed, for an assertion message."""
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("chain", range(CHAINS))
def test_confirmed_messages_survive_kill_9_in_order(tmp_path: Path, chain: int) -> None:
    """Through KILLS_PER_CHAIN kills -9 at seeded instants and a clean restart, on one
    journal: no confirmed message is lost, none is invented, each key's messages are
    first handled in acceptance order, redelivered/attempt tell the truth, and every
    incarnation starts from the last durable snapshot (details in the module docstring)."""
    seed = BASE_SEED * 100_000 + chain
    rng = random.Random(seed)
    where = f"chain seed {seed} (INORDER_CRASH_SEED={BASE_SEED}), files in {tmp_path}"
    kills: dict[int, float] = {}
    for run in range(KILLS_PER_CHAIN):
        child = Child(tmp_path, run, rng.randrange(2**32), "kill")
        try:
            started = child.wait_for("running", START_TIMEOUT)
            assert started, f"run {run} did not start, {where}:\n{child.output()}"
            time.sleep(rng.uniform(0, MAX_KILL_DELAY))  # the kill instant
            assert child.process.poll() is None, (
                f"run {run} exited before it was killed, {where}:\n{child.output()}"
            )
            kills[run] = child.kill()
            assert child.process.returncode == -signal.SIGKILL
        finally:
            child.close()

    child = Child(tmp_path, KILLS_PER_CHAIN, rng.randrange(2**32), "final")
    try:
        replayed = child.wait_for("replayed", FINAL_TIMEOUT)
        done = child.wait_for("done", FINAL_TIMEOUT) if replayed else ""
        assert done, f"the final run did not finish (a hang?), {where}:\n{child.output()}"
        assert child.process.wait(FINAL_TIMEOUT) == 0, f"{where}:\n{child.output()}"
    finally:
        child.close()

    facts = read_facts(tmp_path / "facts.log")
    counts = check_messages(facts)
    last_saves, lost_saves = check_snapshots(facts, kills)
    final_run = KILLS_PER_CHAIN
    replayed_now = sum(1 for run, *_, red in facts.handled if run == final_run and red)
    if int(replayed.split()[1]) != replayed_now:
        facts.problems.append(
            f"the final run reports {replayed} but handled {replayed_now} replayed messages"
        )
    codec = Codec()
    with SQLiteJournal(tmp_path / "journal.db") as journal:
        if journal.pending_count():
            facts.problems.append(
                f"{journal.pending_count()} message(s) left in the journal after a clean stop"
            )
        if journal.dead_letters():
            facts.problems.append(f"dead letters: {journal.dead_letters()[:5]}")
        for key, save in last_saves.items():
            blob = journal.load_snapshot(key)
            state = codec.loads(blob) if blob is not None else None
            want = {"tag": save.tag, "count": save.count, "last": save.last}
            if state != want:
                facts.problems.append(f"key {key!r}: the journal keeps {state}, last saved {want}")
    report = f"{counts}, {len(last_saves)} keys snapshotted, {lost_saves} save(s) lost to kills"
    print(report)
    assert not facts.problems, (
        f"{where}: {len(facts.problems)} problem(s); {report}:\n" + "\n".join(facts.problems[:30])
    )
    assert counts["confirmed"] > 50 * KILLS_PER_CHAIN, f"too little load: {report}, {where}"
