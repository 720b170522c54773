"""Cluster mode through real process failures (issue 10's proof), on loopback, bounded.

Each scenario test starts its own `EmbeddedRedis` on 127.0.0.1, three node
processes and a producer process (tests/_cluster_child.py), with scaled-down lease
settings (`lease_ttl` 2 s, `tick` 0.2 s, `member_ttl` 1 s, 16 shards). Once every
shard is owned, the producer (`role="sender"`) sends 60 users x 300 messages, each
user's in order, paced over 8 s (the users take turns), about 4 % of them asks,
half of them (all, in `redis_restart`) with a `msg_id`, and 3 % of those sent
again 0 to 4 messages later with the same `msg_id`: a producer duplicate, which
must never run. When about a third has been handled, one event happens:

* `kill9`: SIGKILL of the busiest node (the one holding most shards);
* `sigstop`: SIGSTOP of the busiest node for `lease_ttl` + 1 s, then SIGCONT: it
  wakes up as a zombie whose leases were taken over meanwhile, with messages waiting
  locally for them (in this scenario one handler in five takes 60 ms, longer than a
  user's messages are apart, so that one or two wait behind it: `HANDLER_MS`);
* `sigterm`: SIGTERM of the busiest node, which stops its runtime gracefully;
* `join`: a fourth node starts and takes its share by handoffs;
* `redis_restart`: the Redis server restarts (SIGTERM, same port, append-only file).

Every node appends a line per handling to a file of its own (O_APPEND, written
before the handler's first await, so it survives SIGKILL and SIGSTOP cannot
reorder it) with `ctx.epoch` and `ctx.message_id`, and the handler's interval: its
start (the take that passed the fence check) and, in a second line, its end, on
`time.monotonic()`, which every process of the machine shares. A monitor thread
samples every lease and its remaining TTL in one script (with the server's TIME)
every 20 ms; the shards' ownership logs (`<ns>:{<ns>:<shard>}:log`, written by the
ACQUIRE and RELEASE scripts) are read at the end. Handlings carry the wall clock, the
logs' stream ids the server's clock in ms: the same clock, on one machine. The checks:

* A handling is *effective* if its epoch was still the shard's current one when it
  started (no release of it and no newer acquisition before it), else *late*: a
  zombie's work, whose commit must be fenced. Late handlings are allowed only in
  `sigstop`, by the paused node, under an epoch taken over (not released), and only
  one it had taken before the pause (its line written after SIGCONT): one taken after
  SIGCONT started past the node's fence point. The paused node must have lost shards
  (`stats()["cluster"]["lost"]`); what waited there for them is dropped ("fenced"), not
  run (`dropped_by_paused` in the figures).
* One handler of a key at a time across the processes (G12): no two handlers' intervals
  of one user overlap, except one the paused node had begun before its pause and was
  still running then (it finishes after SIGCONT, beside the next owner; its commit is
  refused). A killed node's handler runs until its process was reaped.
* Per user, the effective handlings in time order: the first occurrences are exactly
  1..N in order (only an ask that failed with a clear error may be missing); under
  one epoch the numbers follow each other without a gap; the epoch never goes back;
  a number runs again only in an epoch that began with a takeover from the killed
  or paused node, redelivered, its first run at most `WINDOW` s before the failure
  (the in-flight window), or between the signal and its effect. A producer
  duplicate never runs. `ctx.redelivered` is set only in an epoch that began with a
  takeover (a graceful handoff redelivers nothing), before that epoch's new
  messages; `ctx.attempt` is 1 for a first delivery and >= 2 for a redelivery;
  `ctx.message_id` is the one sent.
* Every ask is answered with its number, or fails with a clear error
  (`FutureTimeout`, `Dropped`, with a message); no `send` fails.
* Ownership, per shard: the acquisitions' epochs strictly increase; a release names
  the current owner's token; a new token is acquired only after the previous one was
  released or its lease (as sampled: sample time + PTTL) had expired, and the old
  token is never seen after: never two owners at once. A stopping node acquires
  nothing; a stopped one released every shard it held; a joining node gets shards,
  each released to it (no takeover).
* Takeover of the failed node's shards (failure instant to acquisition) within
  `lease_ttl` + 2 ticks + `SLACK`.
* At the end: no entry left in any shard stream, nothing pending, no dead letter;
  after the graceful stop of every node (within half its stop timeout): no lease
  left, every node's `in_flight`, `pending` and `dead_letters` 0, none of its
  background tasks died.

Known runtime bugs (`KNOWN_BUGS`, each reproduced in one process at the end of this
file under `xfail(strict=True)`) break some of these checks in some runs. Each
problem found is attributed to one of them when it has its signature; a scenario
whose every problem is attributed ends `xfail` (imperatively: whether a run hits
the bug is up to the scheduler), with the list; any other problem fails it. When a
bug is fixed, its reproduction passes, which strict xfail turns into a failure:
remove its marker and its `KNOWN_BUGS` entry.

`INORDER_CHAOS_SEED` picks another producer seed. A failure names the seed and the
directory of the run's files (handlings, ownership logs, lease samples, the
children's output, run.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import actors
from actors import Context, UserActor
from supervisors import RedisCluster, Runtime
from supervisors.cluster._shards import shard_of
from supervisors.testing import EmbeddedRedis

redis = pytest.importorskip("redis")
pytest.importorskip("redis.asyncio")  # redis.asyncio.Redis in the in-process tests

CHILD = Path(__file__).resolve().parent / "_cluster_child.py"
# The directory the parent imported the package from: the source tree, or the
# compiled copy the suite also runs against (PYTHONPATH with `python -P`).
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent

NAMESPACE = "t"
N_SHARDS = 16
LEASE_TTL = 2.0
TICK = 0.2
CLUSTER = {
    "namespace": NAMESPACE,
    "n_shards": N_SHARDS,
    "lease_ttl": LEASE_TTL,
    "tick": TICK,
    "member_ttl": 1.0,
    "join_grace": 0.5,
    "handoff_timeout": 5.0,
    "ask_timeout": 8.0,
}
USERS = 60
MESSAGES = 300
PRODUCE_SECONDS = 8.0  # the producer's schedule: about 2 250 messages/s in all
EVENT_AT = 0.35  # the event comes when this share of the messages has been handled
# Takeover bound: lease_ttl + 2 ticks, plus SLACK for process scheduling on a loaded
# 2-core machine (3 nodes, the producer, the server and this process share it): the
# new owner's tick may start a few loop passes late, and the failure instant is
# taken here, in another process. Measured takeovers: 1.9 to 2.15 s (the lease was
# last renewed up to a tick before the failure; the new owner acts at its next tick).
SLACK = 0.3
# The in-flight window: a message handled again after a failure was handled by the
# failed node at most this long before the failure (read, run, commit not yet
# written). Measured: under 10 ms.
WINDOW = 0.5
# How long a handler sleeps (ms), by n % 5 shifted per user (tests/_cluster_child.py).
# In `sigstop`, one message in five takes 60 ms, more than a user's messages are apart
# (27 ms): the next one or two wait behind it, read, on the node, so that the paused
# node wakes up with messages waiting locally for the shards it lost (it used to run
# one of them beside the next owner).
HANDLER_MS = {"default": [2, 4, 6, 8, 10], "sigstop": [5, 5, 5, 5, 60]}
STOP_TIMEOUT = 10.0  # the nodes' rt.stop(timeout=...)
SEED = int(os.environ.get("INORDER_CHAOS_SEED", "0"))


# -- child processes -------------------------------------------------------------------


class Child:
    """One child process; its output goes to a log file, its signals to a pipe."""

    def __init__(self, out: Path, name: str, role: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.node_id = ""
        self.log_path = out / f"{name}.out"
        read_fd, write_fd = os.pipe()
        self.signals = read_fd
        self.buffer = b""
        self.lines: list[str] = []
        self.eof = False
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    str(CHILD),
                    str(PACKAGE_DIR),
                    role,
                    json.dumps(settings),
                    str(write_fd),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)

    def poll_lines(self, timeout: float = 0.0) -> None:
        """Read what the child signalled (waiting up to `timeout` for something)."""
        if self.eof or not select.select([self.signals], [], [], timeout)[0]:
            return
        chunk = os.read(self.signals, 65536)
        if not chunk:  # the child exited (or closed the pipe)
            self.eof = True
            return
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(line.decode())

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first line signalled that starts with `prefix` ("" if none in time)."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines if line.startswith(prefix)), "")
            left = deadline - time.monotonic()
            if found or left <= 0 or self.eof:
                return found
            self.poll_lines(min(left, 0.1))

    def send_signal(self, sig: int) -> None:
        """Signal this child by its own pid (only while it has not been reaped)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def close(self) -> None:
        """Kill the child if it still runs (SIGCONT first: it may be stopped), close the pipe."""
        if self.process.poll() is None:
            self.send_signal(signal.SIGCONT)
            self.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        os.close(self.signals)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


# -- what the nodes handled ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handling:
    t: float  # wall clock (the server's clock too: same machine)
    user: str
    n: int
    copy: int
    kind: str
    attempt: int
    redelivered: bool
    epoch: int | None  # ctx.epoch
    msg_id: str  # ctx.message_id, "-" if None
    node: str  # the node's name (n1, n2, ...)
    hid: str  # the handling's name (its end is the E line of that name)
    start: float  # time.monotonic() when the runtime let it start (every process's clock)


class HandledFiles:
    """Reads the nodes' handling files as they grow (complete lines only)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}
        self.handlings: list[Handling] = []
        self.ends: dict[str, float] = {}  # hid -> time.monotonic() when the handler ended
        self.covered: dict[str, set[int]] = defaultdict(set)

    def refresh(self) -> None:
        for path in sorted(self.out.glob("*.handled")):
            with path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = self.partial.get(path, b"") + f.read()
                self.offsets[path] = f.tell()
            *lines, rest = data.split(b"\n")
            self.partial[path] = rest
            for raw in lines:
                if raw.startswith(b"E "):
                    _, hid, end = raw.decode().split()
                    self.ends[hid] = float(end)
                    continue
                _, t, user, n, copy, kind, attempt, red, epoch, msg_id, node, hid, start = (
                    raw.decode().split()
                )
                h = Handling(
                    float(t),
                    user,
                    int(n),
                    int(copy),
                    kind,
                    int(attempt),
                    red == "1",
                    None if epoch == "-" else int(epoch),
                    msg_id,
                    node,
                    hid,
                    float(start),
                )
                self.handlings.append(h)
                if h.copy == 0:
                    self.covered[h.user].add(h.n)

    def count(self) -> int:
        return sum(len(v) for v in self.covered.values())


# -- what Redis says ------------------------------------------------------------------

# The leases of every shard with their remaining TTL, and the server's time, atomically.
SAMPLE = """
local t = redis.call('TIME')
local out = {t[1], t[2]}
for _, key in ipairs(KEYS) do
  out[#out + 1] = redis.call('GET', key) or ''
  out[#out + 1] = redis.call('PTTL', key)
end
return out
"""


def shard_key(shard: int, name: str) -> str:
    return f"{NAMESPACE}:{{{NAMESPACE}:{shard}}}:{name}"


@dataclass(frozen=True, slots=True)
class Sample:
    ms: int  # the server's clock
    leases: tuple[tuple[str, int], ...]  # per shard: (token or "", pttl ms)


class LeaseMonitor(threading.Thread):
    """Samples every shard's lease every 20 ms (through a Redis restart: errors skipped)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=1.0)
        self.script = self.client.register_script(SAMPLE)
        self.keys = [shard_key(s, "lease") for s in range(N_SHARDS)]
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            try:
                out = self.script(keys=self.keys)
            except redis.RedisError:
                continue
            ms = int(out[0]) * 1000 + int(out[1]) // 1000
            leases = tuple(
                (out[i].decode() if out[i] else "", int(out[i + 1])) for i in range(2, len(out), 2)
            )
            self.samples.append(Sample(ms, leases))

    def owners(self) -> dict[int, str]:
        """The node id holding each shard, as last sampled."""
        if not self.samples:
            return {}
        return {
            s: token.rpartition("|")[0]
            for s, (token, _) in enumerate(self.samples[-1].leases)
            if token
        }

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
        self.client.close()


def stream_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def read_logs(client: Any) -> dict[int, list[tuple[int, str, str, int]]]:
    """Per shard, the ownership log: (ms, ev, node id, epoch), in stream order."""
    out: dict[int, list[tuple[int, str, str, int]]] = {}
    for shard in range(N_SHARDS):
        rows = []
        for entry_id, fields in client.xrange(shard_key(shard, "log")):
            node, _, epoch = fields[b"token"].decode().rpartition("|")
            rows.append((stream_ms(entry_id), fields[b"ev"].decode(), node, int(epoch)))
        out[shard] = rows
    return out


def leftovers(client: Any) -> list[str]:
    """What is left in the shards' streams: entries, pending ones, dead letters."""
    found = []
    for shard in range(N_SHARDS):
        for name in ("q", "qp"):
            key = shard_key(shard, name)
            if client.exists(key) and client.xlen(key):
                found.append(f"{key}: {client.xlen(key)} entries")
            if client.exists(key):
                pending = sum(g["pending"] for g in client.xinfo_groups(key))
                if pending:
                    found.append(f"{key}: {pending} pending")
        dead = client.hlen(shard_key(shard, "dlq"))  # dead letters: kept by id in a hash
        if dead:
            found.append(f"{shard_key(shard, 'dlq')}: {dead} dead letters")
    return found


# -- one run -----------------------------------------------------------------------------


@dataclass
class Event:
    kind: str
    node: str  # the node's name ("" for the server)
    node_id: str
    at: float  # wall clock when it happened (for SIGSTOP: the stop), just before the signal
    until: float = 0.0  # for SIGSTOP: the continue
    # When the signal had surely taken effect (SIGKILL: reaped; SIGSTOP: reported
    # stopped): the node may run on for a moment after the signal is sent.
    confirmed: float = 0.0
    shards: tuple[int, ...] = ()  # the shards the node held just before
    # The same instants on time.monotonic(), the clock of the handlers' intervals.
    at_mono: float = 0.0
    until_mono: float = 0.0
    confirmed_mono: float = 0.0


@dataclass
class Run:
    scenario: str
    seed: int
    out: Path
    server: Any
    msg_id_fraction: float
    nodes: dict[str, Child] = field(default_factory=dict)
    producer: Child | None = None
    events: list[Event] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop_began: dict[str, float] = field(default_factory=dict)  # node name -> SIGTERM instant
    held_after_stop: dict[int, str] = field(default_factory=dict)  # shard -> token
    unfinished: list[str] = field(default_factory=list)  # what the run left undone

    def settings(self, name: str) -> dict[str, Any]:
        return {
            "url": self.server.url,
            "cluster": CLUSTER,
            "out": str(self.out),
            "name": name,
            "stop_timeout": STOP_TIMEOUT,
            "handler_ms": HANDLER_MS.get(self.scenario, HANDLER_MS["default"]),
            "max_life": 150,
            "producer": {
                "seed": self.seed,
                "users": USERS,
                "messages": MESSAGES,
                "seconds": PRODUCE_SECONDS,
                "ask_fraction": 0.04,
                "msg_id_fraction": self.msg_id_fraction,
                "dup_fraction": 0.03,
            },
        }

    def start_node(self, name: str) -> Child:
        child = Child(self.out, name, "node", self.settings(name))
        self.nodes[name] = child
        ready = child.wait_for("ready", 30)
        assert ready, f"node {name} did not start:\n{child.output()}"
        child.node_id = ready.split()[1]
        return child


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def busiest(run: Run, monitor: LeaseMonitor, files: HandledFiles) -> Child:
    """The live node holding most shards (then: the one that handled most)."""
    owners = monitor.owners()
    files.refresh()
    handled: dict[str, int] = defaultdict(int)
    for h in files.handlings:
        handled[h.node] += 1
    live = [c for c in run.nodes.values() if c.process.poll() is None]
    return max(
        live,
        key=lambda c: (sum(1 for o in owners.values() if o == c.node_id), handled[c.name]),
    )


def held_by(monitor: LeaseMonitor, node_id: str) -> tuple[int, ...]:
    return tuple(sorted(s for s, o in monitor.owners().items() if o == node_id))


def do_event(run: Run, monitor: LeaseMonitor, files: HandledFiles) -> None:
    scenario = run.scenario
    if scenario == "redis_restart":
        at = time.time()
        run.server.restart()
        run.events.append(Event("redis_restart", "", "", at, time.time()))
        return
    if scenario == "join":
        at = time.time()
        child = run.start_node("n4")
        run.events.append(Event("join", "n4", child.node_id, at))
        return
    victim = busiest(run, monitor, files)
    shards = held_by(monitor, victim.node_id)
    if scenario == "kill9":
        at, at_mono = time.time(), time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        dead, dead_mono = time.time(), time.monotonic()
        event = Event("kill9", victim.name, victim.node_id, at, 0.0, dead, shards)
        event.at_mono, event.confirmed_mono = at_mono, dead_mono
        run.events.append(event)
    elif scenario == "sigstop":
        at, at_mono = time.time(), time.monotonic()
        victim.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(victim.process.pid, os.WUNTRACED)  # reports it, reaps nothing
        assert os.WIFSTOPPED(status), status
        stopped, stopped_mono = time.time(), time.monotonic()
        time.sleep(LEASE_TTL + 1.0)
        until, until_mono = time.time(), time.monotonic()
        victim.send_signal(signal.SIGCONT)
        event = Event("sigstop", victim.name, victim.node_id, at, until, stopped, shards)
        event.at_mono, event.until_mono, event.confirmed_mono = at_mono, until_mono, stopped_mono
        run.events.append(event)
    elif scenario == "sigterm":
        at = run.stop_began[victim.name] = time.time()
        victim.send_signal(signal.SIGTERM)
        run.events.append(Event("sigterm", victim.name, victim.node_id, at, shards=shards))
        stopped = victim.wait_for("stopped", STOP_TIMEOUT + 10)
        run.exit_codes[victim.name] = victim.process.wait(10)
        assert stopped, f"node {victim.name} did not stop on SIGTERM:\n{victim.output()}"
        run.events[-1].until = time.time()
    else:  # pragma: no cover
        raise AssertionError(scenario)


def execute(run: Run) -> tuple[HandledFiles, LeaseMonitor, dict[int, list[Any]]]:
    """Start everything, produce, cause the event, wait for the end, stop the nodes."""
    client = redis.Redis.from_url(run.server.url, socket_timeout=5.0)
    monitor = LeaseMonitor(run.server.url)
    monitor.start()
    files = HandledFiles(run.out)
    try:
        for name in ("n1", "n2", "n3"):
            run.start_node(name)
        assert wait_until(lambda: len(monitor.owners()) == N_SHARDS, 20), (
            f"the shards were not all owned: {monitor.owners()}"
        )
        # The producer starts once every shard is owned: every message has an owner.
        run.producer = producer = Child(run.out, "producer", "producer", run.settings("p"))
        assert producer.wait_for("ready", 30), f"the producer did not start:\n{producer.output()}"

        def handled_share() -> float:
            files.refresh()
            return files.count() / (USERS * MESSAGES)

        assert wait_until(lambda: handled_share() >= EVENT_AT, 60), (
            f"only {handled_share():.0%} handled before the event"
        )
        do_event(run, monitor, files)
        done = producer.wait_for("done", PRODUCE_SECONDS + 40)
        run.exit_codes["producer"] = producer.process.wait(10) if done else None
        assert done, f"the producer did not finish:\n{producer.output()}"
        failed_asks = failed_ask_numbers(run.out)

        def complete() -> bool:
            files.refresh()
            return all(
                files.covered[f"u{u}"] | failed_asks[f"u{u}"] >= set(range(1, MESSAGES + 1))
                for u in range(USERS)
            )

        progress = [files.count(), time.monotonic()]

        def complete_or_stuck() -> bool:
            if complete():
                return True
            if files.count() != progress[0]:
                progress[:] = [files.count(), time.monotonic()]
            return time.monotonic() - progress[1] > 10  # nothing handled for 10 s: stuck

        wait_until(complete_or_stuck, 60, 0.1)
        if not complete():
            run.unfinished.append("not every message was handled (nothing more for 10 s)")
        wait_until(lambda: not leftovers(client), 5, 0.1)
        run.unfinished += leftovers(client)
        # Every node stops gracefully (drains, hands off, releases).
        live = [c for c in run.nodes.values() if c.process.poll() is None]
        for child in live:
            run.stop_began[child.name] = time.time()
            child.send_signal(signal.SIGTERM)
        for child in live:
            stopped = child.wait_for("stopped", STOP_TIMEOUT + 10)
            run.exit_codes[child.name] = child.process.wait(10) if stopped else None
        for name in run.nodes:
            path = run.out / f"{name}.stats.json"
            if path.exists():
                run.stats[name] = json.loads(path.read_text())
        files.refresh()
        time.sleep(0.1)  # a last lease sample
        monitor.stop()
        logs = read_logs(client)
        # For a post-mortem: the ownership logs and the lease samples, next to the other files.
        (run.out / "ownership.json").write_text(json.dumps({str(k): v for k, v in logs.items()}))
        (run.out / "leases.json").write_text(
            json.dumps([(x.ms, x.leases) for x in monitor.samples])
        )
        run.unfinished += [f"after the stop: {x}" for x in leftovers(client)]
        for shard in range(N_SHARDS):
            token = client.get(shard_key(shard, "lease"))
            if token is not None:
                run.held_after_stop[shard] = token.decode()
        (run.out / "run.json").write_text(
            json.dumps(
                {
                    "nodes": {name: child.node_id for name, child in run.nodes.items()},
                    "events": [vars(e) for e in run.events],
                    "exit_codes": run.exit_codes,
                    "stop_began": run.stop_began,
                    "held_after_stop": run.held_after_stop,
                    "unfinished": run.unfinished,
                }
            )
        )
        return files, monitor, logs
    finally:
        monitor.halt.set()
        client.close()


def failed_ask_numbers(out: Path) -> dict[str, set[int]]:
    failed: dict[str, set[int]] = defaultdict(set)
    for line in producer_lines(out):
        parts = line.split()
        if parts[0] == "A" and parts[3] == "err":
            failed[parts[1]].add(int(parts[2]))
    return failed


def producer_lines(out: Path) -> list[str]:
    path = out / "producer.log"
    return path.read_text().splitlines() if path.exists() else []


# -- known runtime bugs ------------------------------------------------------------------

# Runtime bugs still open, by name: a problem matching one's signature is tagged with it,
# and a run whose every problem is tagged ends xfail. Empty: the four that the first
# chaos runs found (a dedup race, replays ignoring `done`, a handoff releasing a read
# batch, a reader dying on a lookup error) are fixed, and their reproductions below are
# regression tests. A problem tagged with a name not listed here is an ordinary failure.
KNOWN_BUGS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Problem:
    text: str
    bug: str | None = None  # a key of KNOWN_BUGS when its signature matches


# -- the checks ---------------------------------------------------------------------------


def analyse(
    run: Run,
    handlings: list[Handling],
    samples: list[Sample],
    logs: dict[int, list[tuple[int, str, str, int]]],
    handler_ends: dict[str, float],
) -> tuple[list[Problem], dict[str, Any]]:
    """Every check of the module documentation; returns (problems, figures)."""
    problems: list[Problem] = []

    def problem(text: str, bug: str | None = None) -> None:
        problems.append(Problem(text, bug if bug in KNOWN_BUGS else None))

    figures: dict[str, Any] = {}
    failures = {e.node: e for e in run.events if e.kind in ("kill9", "sigstop")}
    node_name = {c.node_id: c.name for c in run.nodes.values()}

    # -- ownership: epochs, releases, never two owners ----------------------------------
    acquired: dict[int, list[tuple[int, int, str]]] = defaultdict(list)  # (ms, epoch, node)
    released: dict[tuple[int, int], int] = {}  # (shard, epoch) -> ms
    epoch_node: dict[tuple[int, int], str] = {}  # (shard, epoch) -> node name
    for shard, rows in logs.items():
        current: tuple[str, int] | None = None
        for ms, ev, node, epoch in rows:
            if ev == "acquire":
                if acquired[shard] and epoch <= acquired[shard][-1][1]:
                    problem(f"shard {shard}: epoch {epoch} acquired after {acquired[shard][-1][1]}")
                acquired[shard].append((ms, epoch, node))
                epoch_node[shard, epoch] = node_name.get(node, node)
                current = (node, epoch)
            elif ev == "release":
                if current != (node, epoch):
                    problem(f"shard {shard}: release of {node}|{epoch}, the owner is {current}")
                released[shard, epoch] = ms
    expiry: dict[tuple[int, str], int] = {}  # (shard, token) -> latest sampled expiry
    seen_last: dict[tuple[int, str], int] = {}  # (shard, token) -> last sample showing it
    for sample in samples:
        for shard, (token, pttl) in enumerate(sample.leases):
            if token:
                expiry[shard, token] = max(expiry.get((shard, token), 0), sample.ms + max(pttl, 0))
                seen_last[shard, token] = sample.ms
    for shard, acquisitions in acquired.items():
        for (_, e1, n1), (ms2, e2, n2) in itertools.pairwise(acquisitions):
            token = f"{n1}|{e1}"
            ends = released.get((shard, e1))
            if ends is None or ends > ms2:
                valid = expiry.get((shard, token))
                if valid is not None and valid > ms2 + 1:
                    problem(
                        f"shard {shard}: {n2}|{e2} acquired at {ms2} while {token}'s lease "
                        f"was valid until {valid} (not released)"
                    )
            if seen_last.get((shard, token), 0) > ms2:
                problem(f"shard {shard}: {token} still held after {n2}|{e2} was acquired")

    for shard, acquisitions in acquired.items():  # a stopping node acquires nothing
        for ms, epoch, _ in acquisitions:
            name = epoch_node[shard, epoch]
            if ms / 1000 > run.stop_began.get(name, float("inf")):
                problem(f"{name} acquired shard {shard} (epoch {epoch}) after its stop began")

    def takeover_epoch(shard: int, epoch: int) -> bool:
        """Whether `epoch` began with a takeover: the epoch before it was not released."""
        before = [e for _, e, _ in acquired[shard] if e < epoch]
        return bool(before) and (shard, max(before)) not in released

    # -- graceful moves: a stop or a join hands shards over, released first -------------
    for event in run.events:
        if event.kind not in ("sigterm", "join"):
            continue
        mine = [key for key, name in epoch_node.items() if name == event.node]
        if event.kind == "join":
            if not mine:
                problem(f"{event.node} joined and was given no shard")
            for shard, epoch in mine:
                if takeover_epoch(shard, epoch):
                    problem(f"{event.node} took shard {shard} over instead of a handoff")
            moved = [ms for (shard, epoch) in mine for ms, e, _ in acquired[shard] if e == epoch]
        else:
            for shard, epoch in mine:
                if (shard, epoch) not in released:
                    problem(f"{event.node} stopped without releasing shard {shard} (epoch {epoch})")
            moved = [
                ms
                for shard in event.shards
                for ms, _, node in acquired[shard]
                if ms / 1000 > event.at and node != event.node_id
            ]
        if moved:
            figures["handoff_s"] = round(max(moved) / 1000 - event.at, 2)

    # -- takeover time ------------------------------------------------------------------
    bound = LEASE_TTL + 2 * TICK + SLACK
    takeovers = []
    for event in failures.values():
        for shard in event.shards:
            after = [ms for ms, _, _ in acquired[shard] if ms / 1000 > event.at]
            if not after:
                problem(f"shard {shard} of {event.node} was never taken over")
                continue
            took = after[0] / 1000 - event.at
            takeovers.append(took)
            if took > bound:
                problem(
                    f"shard {shard} of {event.node} taken over {took:.3f} s after the "
                    f"{event.kind} (bound {bound:.2f} s)"
                )
    if takeovers:
        figures["takeover_s"] = f"{min(takeovers):.2f}..{max(takeovers):.2f}"

    # -- effective and late handlings ----------------------------------------------------
    def end_of(shard: int, epoch: int) -> tuple[float | None, bool]:
        """When `epoch` stopped being the shard's current one (ms; None: it still is), and
        whether that was its release."""
        newer = [ms for ms, e, _ in acquired[shard] if e > epoch]
        end = min(newer) if newer else None
        release = released.get((shard, epoch))
        if release is not None and (end is None or release <= end):
            return release, True
        return end, False

    effective: dict[str, list[Handling]] = defaultdict(list)
    late: list[Handling] = []
    for h in sorted(handlings, key=lambda h: h.t):
        shard = shard_of(h.user, N_SHARDS)
        if h.msg_id not in ("-", f"{h.user}.{h.n}"):
            problem(f"ctx.message_id {h.msg_id!r} for {h.user} {h.n}")
        if h.copy:
            problem(
                f"a producer duplicate (same msg_id) was handled: {h}",
                "replay-dedup" if h.redelivered else "dedup-race",
            )
            continue
        if h.epoch is None:
            problem(f"handled without an epoch: {h}")
            continue
        end, by_release = end_of(shard, h.epoch)
        if end is not None and h.t * 1000 >= end:
            late.append(h)
            failure = failures.get(h.node)
            if by_release:
                problem(
                    f"handled by {h.node} after it released the shard: {h}", "handoff-read-batch"
                )
            elif failure is None or failure.kind != "sigstop" or h.t < failure.until:
                problem(f"handled by {h.node} after its epoch was taken over: {h}")
            elif h.start >= failure.until_mono:  # taken after SIGCONT, past the fence point
                problem(f"started by {h.node} after SIGCONT, its epoch taken over: {h}")
            continue
        if h.t * 1000 < next((ms for ms, e, _ in acquired[shard] if e == h.epoch), 0):
            problem(f"handled before its epoch was acquired: {h}")
        effective[h.user].append(h)
    figures["late"] = len(late)

    # -- one handler of a key at a time, across processes (G12) --------------------------
    def running_at_pause(h: Handling, end: float) -> bool:
        """A handler the paused node had begun before its pause and that was still running
        then: it may finish after SIGCONT, beside the next owner (its commit is fenced)."""
        failure = failures.get(h.node)
        return (
            failure is not None
            and failure.kind == "sigstop"
            and h.start < failure.until_mono
            and end > failure.at_mono
        )

    overlaps = 0
    by_user: dict[str, list[Handling]] = defaultdict(list)
    for h in handlings:
        by_user[h.user].append(h)
    for user, seq in sorted(by_user.items()):
        last: Handling | None = None  # the handler that ends last of those begun so far
        last_end = float("-inf")
        for h in sorted(seq, key=lambda h: h.start):
            end = handler_ends.get(h.hid)
            if end is None:
                failure = failures.get(h.node)
                if failure is None or failure.kind != "kill9":
                    problem(f"a handler never ended: {h}")
                    continue
                end = failure.confirmed_mono  # it ran until its process died
            if running_at_pause(h, end):
                continue
            if last is not None and h.start < last_end:
                overlaps += 1
                problem(
                    f"{user}: two handlers at once, {last.node} epoch {last.epoch} n {last.n} "
                    f"(until {last_end:.3f}) and {h.node} epoch {h.epoch} n {h.n} (from "
                    f"{h.start:.3f})"
                )
            if end > last_end:
                last, last_end = h, end
    figures["overlaps"] = overlaps

    # -- per user: order, coverage, duplicates, redelivery --------------------------------
    failed_asks = failed_ask_numbers(run.out)
    duplicates = redelivered = 0
    window = 0.0
    for u in range(USERS):
        user = f"u{u}"
        shard = shard_of(user, N_SHARDS)
        seq = effective[user]
        first_at: dict[int, Handling] = {}
        for h in seq:
            first_at.setdefault(h.n, h)
        firsts = list(first_at)  # in the order of their first handling
        absent = failed_asks[user] - set(first_at)  # a failed ask may never have run
        want = [n for n in range(1, MESSAGES + 1) if n not in absent]
        if firsts != want:
            missing = sorted(set(want) - set(firsts))
            wrong = next(
                (i for i, (a, b) in enumerate(zip(firsts, want, strict=False)) if a != b), None
            )
            problem(
                f"{user}: first handlings are not 1..{MESSAGES} in order: {len(firsts)} "
                f"distinct, missing {missing[:10]}, first difference at position {wrong}"
            )
            continue
        successor = dict(itertools.pairwise(want))
        replaying = bool(seq) and seq[0].redelivered
        for prev, h in itertools.pairwise(seq):
            if h.epoch == prev.epoch:
                if h.n != successor.get(prev.n):
                    problem(f"{user}: under epoch {h.epoch}, {h.n} after {prev.n}")
                if h.redelivered and not replaying:
                    problem(f"{user}: {h.n} redelivered after a new message, {prev.n}")
                replaying = replaying and h.redelivered
            elif h.epoch < prev.epoch:  # type: ignore[operator]
                problem(f"{user}: epoch {h.epoch} handled after epoch {prev.epoch}")
            else:
                if h.n > successor.get(prev.n, MESSAGES + 1):
                    problem(f"{user}: a gap, {h.n} after {prev.n} (epoch {h.epoch})")
                replaying = h.redelivered
        for h in seq:
            epoch = h.epoch or 0  # effective handlings have one
            if h.redelivered:
                redelivered += 1
                if not takeover_epoch(shard, epoch):
                    problem(f"{user}: redelivered after a release: {h}", "handoff-read-batch")
            if h.attempt < 2 if h.redelivered else h.attempt != 1:
                problem(f"{user}: attempt {h.attempt} with redelivered={h.redelivered}")
            earlier = first_at[h.n]
            if earlier is h:
                continue
            duplicates += 1
            failure = failures.get(earlier.node)
            if not h.redelivered:
                problem(f"{user}: {h.n} handled again, not redelivered: {h}")
            elif not takeover_epoch(shard, epoch):  # its redelivery is a problem already
                problem(f"{user}: {h.n} handled again after a release", "handoff-read-batch")
            elif failure is not None and -WINDOW <= earlier.t - failure.at <= (
                failure.confirmed - failure.at
            ):
                window = max(window, failure.at - earlier.t)
            else:
                problem(f"{user}: {h.n} handled again; first {earlier}, then {h}")
    figures["duplicates"] = duplicates
    figures["redelivered"] = redelivered
    if duplicates:
        figures["window_s"] = round(window, 3)

    # -- asks and sends --------------------------------------------------------------------
    asks = {"ok": 0, "err": 0}
    answered: set[tuple[str, int]] = set()
    for line in producer_lines(run.out):
        parts = line.split()
        if parts[0] == "A":
            user, n, outcome = parts[1], int(parts[2]), parts[3]
            answered.add((user, n))
            asks[outcome] += 1
            if outcome == "ok" and int(parts[4]) != n:
                problem(f"ask {user} {n} answered {parts[4]}")
            clear = outcome == "ok" or (parts[4] in ("FutureTimeout", "Dropped") and len(parts) > 5)
            if not clear:
                problem(f"an ask failed without a clear error: {line}")
        elif parts[0] == "F":
            problem(f"a send failed: {line}")
    asked = {(h.user, h.n) for h in handlings if h.kind == "a"}
    if not asked <= answered:
        problem(f"asks without an outcome: {sorted(asked - answered)[:10]}")
    figures["asks"] = asks
    figures["dups_sent"] = sum(1 for line in producer_lines(run.out) if line.startswith("D "))

    # -- the end, and the nodes' own figures ---------------------------------------------
    problems.extend(Problem(text) for text in run.unfinished)
    for shard, token in run.held_after_stop.items():
        name = node_name.get(token.rpartition("|")[0], "?")
        problem(f"after every node stopped, shard {shard}'s lease is held by {name}")
    for name, code in run.exit_codes.items():
        if code != 0 and not (name in failures and failures[name].kind == "kill9"):
            problem(f"{name} exited with {code}")
    fenced = {}
    for name, stats in run.stats.items():
        cluster = stats["cluster"]
        fenced[name] = cluster["fenced"]
        if stats["task_errors"]:
            problem(f"{name}: a background task died: {stats['task_errors']}")
        if cluster["in_flight"] or cluster["shards_owned"]:
            problem(f"{name} after its stop: {cluster}")
        if stats["pending"] or stats["dead_letters"]:
            problem(
                f"{name} after its stop: pending {stats['pending']}, dead letters "
                f"{stats['dead_letters']}"
            )
        if stats["stop_seconds"] > STOP_TIMEOUT / 2:
            problem(f"{name} took {stats['stop_seconds']:.1f} s to stop")
    figures["fenced"] = fenced
    for event in failures.values():
        stats = run.stats.get(event.node)
        if event.kind == "sigstop" and stats is not None:
            # What waited there for the lost shards was dropped ("fenced"), not run.
            figures["dropped_by_paused"] = stats["dropped"]
            if stats["cluster"]["lost"] < 1:
                problem(f"{event.node} was paused past its lease but lost no shard")

    # A node task that died leaves everything after it undone: every problem follows.
    died = " ".join(repr(stats["task_errors"]) for stats in run.stats.values())
    cascade = "reader-dies" if "_read_loop" in died and "Connection" in died else None
    if cascade is not None and cascade in KNOWN_BUGS:
        problems = [Problem(p.text, p.bug or cascade) for p in problems]
    return problems, figures


# -- the scenarios --------------------------------------------------------------------------

SCENARIOS = ["kill9", "sigstop", "sigterm", "join", "redis_restart"]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cluster_through_failures(tmp_path: Path, scenario: str) -> None:
    """Three nodes and a producer, 60 users x 300 ordered messages, one failure midway:
    order, coverage, asks, fencing, ownership and takeover time (module documentation)."""
    seed = SEED * 100 + SCENARIOS.index(scenario)
    began = time.monotonic()
    # With a Redis restart, every message has a msg_id: a batch the server cut off
    # half-way and the node wrote again must not run twice.
    fraction = 1.0 if scenario == "redis_restart" else 0.5
    with EmbeddedRedis(appendonly=scenario == "redis_restart") as server:
        run = Run(scenario, seed, tmp_path, server, fraction)
        try:
            files, monitor, logs = execute(run)
        finally:
            for child in [*run.nodes.values(), run.producer]:
                if child is not None:
                    child.close()
    problems, figures = analyse(run, files.handlings, monitor.samples, logs, files.ends)
    figures["seconds"] = round(time.monotonic() - began, 1)
    figures["handled"] = len(files.handlings)
    figures["events"] = [
        (e.kind, e.node, f"{len(e.shards)} shards", round(max(e.until - e.at, 0), 2))
        for e in run.events
    ]
    report = f"{scenario} seed {seed}: {figures}"
    print(report)
    where = f"seed {seed} (INORDER_CHAOS_SEED={SEED}), files in {tmp_path}"
    listing = "\n".join(f"[{p.bug}] {p.text}" if p.bug else p.text for p in problems[:40])
    unknown = [p for p in problems if p.bug is None]
    assert not unknown, f"{report}\n{where}: {len(problems)} problem(s):\n{listing}"
    if problems:
        bugs = sorted({p.bug for p in problems if p.bug})
        print(f"{where}: {len(problems)} problem(s), all from known bugs:\n{listing}")
        pytest.xfail(
            f"known runtime bug(s) {bugs}: {len(problems)} problem(s), e.g. {problems[0].text}"
        )


# -- the known bugs, reproduced in one process ---------------------------------------------
#
# Nodes as in tests/test_cluster.py (several runtimes on this loop, one shard unless
# said otherwise), on the suite's server. Each `known_bug` test fails with an
# AssertionError on the very property the chaos scenarios check; once the runtime is
# fixed it passes, and strict xfail makes that a failure: drop the marker (it becomes
# a regression test) and the bug's entry in KNOWN_BUGS. The two tests without a
# marker are such regression tests already: bugs the chaos runs hit, fixed since.

SEEN: list[tuple[str, Any, bool]] = []  # (node name, message, redelivered)
GATE: dict[str, asyncio.Event] = {}
NAMES: dict[int, str] = {}


class Bot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((NAMES.get(id(ctx._cell.host), "?"), message, ctx.redelivered))
        if message == "block":
            await GATE["open"].wait()
        return message


@pytest.fixture
def _repro() -> None:
    SEEN.clear()
    GATE["open"] = asyncio.Event()


@contextlib.asynccontextmanager
async def repro_node(url: str, name: str, **overrides: Any) -> AsyncIterator[Runtime]:
    options: dict[str, Any] = {
        "namespace": "r",
        "n_shards": 1,
        "lease_ttl": 1.0,
        "tick": 0.1,
        "member_ttl": 0.5,
        "join_grace": 0.0,
        "ask_timeout": 5.0,
        "handoff_timeout": 2.0,
    }
    options.update(overrides)
    rt = Runtime(Bot, cluster=RedisCluster(url, **options), idle_timeout=None)
    await rt.start()
    NAMES[id(rt._core)] = name
    try:
        yield rt
    finally:
        if rt.stats()["state"] == "running":
            await rt.stop(timeout=1.0)


async def settle(predicate: Any, seconds: float = 5.0) -> bool:
    """Poll `predicate` (True once it holds); never raises: a fixed runtime may differ."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def owned(rt: Runtime) -> list[int]:
    return list(rt.stats()["cluster"]["shards_owned"])


def bug(name: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_BUGS[name])


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_retry_looked_up_while_its_original_commits_does_not_run(redis_url: str) -> None:
    """A producer's retry (same msg_id) read while the original runs, whose dedup lookup
    (ZMSCORE on `done`) is answered before the original's commit lands and processed
    after it: the interleaving is forced by holding that answer until the commit."""
    async with repro_node(redis_url, "a") as a:
        assert await settle(lambda: owned(a) == [0])
        node: Any = a._node
        real = node._done_scores

        async def done_scores(*args: Any, **kwargs: Any) -> Any:
            scores = await real(*args, **kwargs)
            if node._live_ids:  # the retry's lookup, while the original runs
                GATE["open"].set()
                await settle(lambda: not node._live_ids, 2.0)  # its commit landed
            return scores

        node._done_scores = done_scores
        await a.send("k", "block", msg_id="tg-1")
        assert await settle(lambda: len(SEEN) == 1)
        await a.send("k", "block", msg_id="tg-1")  # the retry
        await settle(lambda: len(SEEN) == 2 or a.stats()["cluster"]["duplicates"] == 1)
        await asyncio.sleep(0.2)
    assert [m for _, m, _ in SEEN] == ["block"], SEEN


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_replayed_retry_of_a_committed_message_does_not_run(redis_url: str) -> None:
    """A node read a producer's retry and died before acknowledging it as a duplicate; its
    original had been committed. The next owner replays it and runs it again."""
    async with repro_node(redis_url, "a") as a:
        assert await settle(lambda: owned(a) == [0])
        await a.send("k", "update", msg_id="tg-1")
        assert await settle(lambda: len(SEEN) == 1)
    async with repro_node(redis_url, "front", role="sender") as front:
        await front.send("k", "update", msg_id="tg-1")  # the retry, nobody owns the shard
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.zscore("r:{r:0}:done", "tg-1") is not None
        # A node that read the retry and died before acknowledging it:
        # (a's group, left by its stop; the next owner destroys it)
        (group,) = await client.xinfo_groups("r:{r:0}:q")
        name = group["name"]
        await client.xreadgroup(name, name, {"r:{r:0}:q": ">"})
    finally:
        await client.aclose()
    async with repro_node(redis_url, "b") as b:
        assert await settle(lambda: owned(b) == [0])
        await settle(lambda: len(SEEN) == 2, 1.0)
    assert [(n, m) for n, m, _ in SEEN] == [("a", "update")], SEEN


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_handoff_waits_for_a_read_batch_being_looked_up(redis_url: str) -> None:
    """A node joins while the owner's read batch of every shard (msg_ids: a ZMSCORE
    lookup, answered 1 s late here) is between its READ and its dispatch: the owner hands
    the joiner's shards off at once (nothing counted in flight) and the joiner redelivers
    what the batch had read (in the chaos runs the old owner also ran some of it after
    its release, its commits fenced)."""
    async with repro_node(redis_url, "a", n_shards=8) as a:
        assert await settle(lambda: len(owned(a)) == 8)
        node: Any = a._node
        real_xread, real_done_scores = node.client.xread, node._done_scores
        waiting, hold, reading = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def xread(*args: Any, **kwargs: Any) -> Any:  # the reader's idle wait
            waiting.set()
            await hold.wait()
            return await real_xread(*args, **kwargs)

        async def done_scores(*args: Any, **kwargs: Any) -> Any:
            scores = await real_done_scores(*args, **kwargs)
            if not reading.is_set():
                reading.set()
                await asyncio.sleep(1.0)  # one slow answer
            return scores

        node.client.xread, node._done_scores = xread, done_scores
        await waiting.wait()  # the reader waits: the next read takes every message at once
        keys: dict[int, str] = {}
        for n in range(200):
            keys.setdefault(shard_of(f"k{n}", 8), f"k{n}")
        for shard, key in sorted(keys.items()):
            await a.send(key, f"m{shard}", msg_id=f"id{shard}")
        hold.set()
        await reading.wait()
        async with repro_node(redis_url, "b", n_shards=8) as b:
            assert await settle(lambda: len(owned(b)) > 0)
            await settle(lambda: len({m for _, m, _ in SEEN}) == 8)
            await asyncio.sleep(1.5)
    redelivered = sorted(m for _, m, r in SEEN if r)
    twice = sorted(m for m in {m for _, m, _ in SEEN} if [x for _, x, _ in SEEN].count(m) > 1)
    assert (redelivered, twice) == ([], []), SEEN


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_stopping_node_acquires_nothing(redis_url: str) -> None:
    """A graceful stop whose drain takes 1 s (a slow handler): the stopping node's tick
    must not acquire the shards it has just released (it is still a live member and
    their owner by hashing): it did, which kept the stop for its whole timeout and
    left those leases to expire."""
    async with (
        repro_node(redis_url, "a", n_shards=8) as a,
        repro_node(redis_url, "b", n_shards=8) as b,
    ):
        assert await settle(lambda: len(owned(a)) + len(owned(b)) == 8 and owned(a) and owned(b))
        mine = owned(a)
        slow = next(f"k{n}" for n in range(1000) if shard_of(f"k{n}", 8) in mine)
        await a.send(slow, "block")
        assert await settle(lambda: len(SEEN) == 1)
        asyncio.get_running_loop().call_later(1.0, GATE["open"].set)
        me = a.stats()["cluster"]["node"]
        began = time.monotonic()
        await a.stop(timeout=4.0)
        took = time.monotonic() - began
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            acquisitions = {
                s: [
                    f[b"token"].decode()
                    for _, f in await client.xrange(f"r:{{r:{s}}}:log")
                    if f[b"ev"] == b"acquire" and f[b"token"].startswith(me.encode())
                ]
                for s in mine
            }
            held = [
                s
                for s in mine
                if (await client.get(f"r:{{r:{s}}}:lease") or b"").startswith(me.encode())
            ]
        finally:
            await client.aclose()
    assert (took < 2.5, held) == (True, []), (took, acquisitions)
    assert all(len(tokens) == 1 for tokens in acquisitions.values()), acquisitions


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_failed_dedup_lookup_is_retried(redis_url: str) -> None:
    """The dedup lookup of a read batch fails once, as a command fails while Redis
    restarts: the batch, and what comes after it, must still be handled."""
    async with repro_node(redis_url, "a") as a:
        assert await settle(lambda: owned(a) == [0])
        node: Any = a._node
        real = node._done_scores
        failed: list[bool] = []

        async def done_scores(*args: Any, **kwargs: Any) -> Any:
            if not failed:
                failed.append(True)
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return await real(*args, **kwargs)

        node._done_scores = done_scores
        await a.send("k", "one", msg_id="tg-1")
        assert await settle(lambda: bool(failed))
        await a.send("k", "two", msg_id="tg-2")
        await settle(lambda: len(SEEN) == 2, 3.0)
        tasks = list(node._tasks)
    died = [t.exception() for t in tasks if t.done() and not t.cancelled()]  # retrieved
    assert [m for _, m, _ in SEEN] == ["one", "two"], (SEEN, died)


@pytest.mark.usefixtures("_repro")
@pytest.mark.timeout(30)
async def test_a_failed_commit_batch_is_written_by_its_retry(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commit batch fails as redis-py fails a pipeline when Redis restarts (it
    empties the pipeline, then raises ConnectionError); the retry must still write it.
    A retry on the emptied pipeline got [] and killed the commit task (zip(strict=True)):
    in 3 runs of 4 with 5 real restarts under load."""
    pipeline = redis.asyncio.client.Pipeline
    real = pipeline.execute
    failed: list[bool] = []
    async with repro_node(redis_url, "a", ask_timeout=3.0) as a:
        assert await settle(lambda: owned(a) == [0])
        commit_sha = a._node._commit.sha  # type: ignore[union-attr]

        async def execute(self: Any, raise_on_error: bool = True) -> Any:
            commit = any(
                str(args[0]).upper() == "EVALSHA" and args[1] == commit_sha
                for args, _ in self.command_stack
            )
            if commit and not failed:
                failed.append(True)
                await self.reset()  # what redis-py's execute() does in its `finally`
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return await real(self, raise_on_error)

        monkeypatch.setattr(pipeline, "execute", execute)
        try:
            answer: Any = await a.ask("k", "hello")
        except Exception as exc:
            answer = exc
        tasks = list(a._node._tasks)  # type: ignore[union-attr]
        died = [
            repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()
        ]
    assert failed
    assert (answer, died) == ("hello", []), (answer, died)
