"""The cluster mode on Redis (issue 10): throughput, cost and failover across processes.

Everything runs on one embedded server (``supervisors.testing.EmbeddedRedis``: a
Valkey server on 127.0.0.1, append-only file fsynced every second), started by the
scenario and stopped afterwards. Three implementations, each with 1 and then 2
processes (child processes, ``benchmarks._cluster_child``, with this process's import
path) that handle the messages, and this process as the producer:

* ``inorder``: node processes running ``Runtime(Counter, cluster=RedisCluster(...))``;
  the producer is a ``role="sender"`` runtime that ``tell``s;
* ``list-lock`` and ``setnx-dedup``: the two hand-written Redis designs of
  :mod:`benchmarks._redis_peers`, with as many worker processes; the producer is plain
  redis-py (pipelined, one batch in flight, as the runtime's outbox).

The workload: ``users`` users, every user activated first with one message (seq 0),
then ``messages`` messages in bursts of ``BURST`` consecutive messages per user (a
user who sends several messages at once, as chat users do), users in turn. The handler
records ``(user, seq, time)``; afterwards the records of every process are merged by
time to count the messages handled out of per-user order, twice, or never.

Cases, per implementation:

* **1 process, 2 processes** (msg/s): from the first send to the last message handled.
  The JSON also has the producer's send time and its CPU per message, the server's CPU
  per message (``INFO cpu``) and the per-command counts.
* **CPU per message** (µs, 2 processes): the CPU time of the node or worker processes
  (all of them, from the first send until everything is committed), per message.
* **Redis commands per message** (2 processes): ``INFO commandstats`` after ``CONFIG
  RESETSTAT`` at the first send, everything the server ran for the producer, the nodes or
  workers, and inside scripts (a script's ``EVALSHA`` and each command it calls count).
* **failover after kill -9** (s): in the 2-process run, after the throughput
  measurement: a steady load of ``LOAD_RATE`` msg/s, then SIGKILL of the busiest
  process, then the same load until ``lease_ttl + AFTER_KILL`` seconds later. The figure
  is the longest any message waited after the kill: ``max(handled - max(sent, kill))``
  over the messages first handled after it. The runtime's victim's shards wait for their
  leases to expire; a peer's worker holds at most one user's lock. The JSON has the
  messages lost (never handled: a peer's worker had popped them), handled twice (the
  runtime redelivers what the victim handled but had not committed) and out of order,
  and for the runtime ``leases_s``, when the survivor held every lease, and
  ``takeover_failures``, the ``cluster_takeover_failed`` events in its log.

Targets (issue 10): ≥ 30k msg/s per node process end to end, ≥ 5x each Redis peer,
≤ 3 Redis commands per message, failover ≤ lease time + 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from benchmarks._measure import ROOT, progress
from benchmarks._redis_peers import PRODUCERS, ListLockWorker, SetnxDedupWorker
from benchmarks._runtime_peer import InorderPeer
from benchmarks._scenarios import (
    SUBJECT,
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_least,
    at_most,
    error_cell,
    size_label,
)

LIST_LOCK = ListLockWorker.role
SETNX = SetnxDedupWorker.role
COLUMNS = (SUBJECT, LIST_LOCK, SETNX)
ROLES = {SUBJECT: "node", LIST_LOCK: LIST_LOCK, SETNX: SETNX}
PROCESSES = (1, 2)

BURST = 4  # consecutive messages of one user
CHUNK = 1_000  # messages per producer batch
NAMESPACE = "bench"
N_SHARDS = 64
LOAD_RATE = 2_000  # msg/s of the failover phase
SETTLE = 0.3  # seconds after the last message: commits and acknowledgements land
CHILD_START_TIMEOUT = 30.0
TIMEOUT = 120.0  # a run that takes longer failed

#: The slow peer handles a fifth of the messages (its rate hardly depends on how many),
#: so that a full run stays within minutes.
SHARE = {SETNX: 0.2}

PER_NODE_TARGET = 30_000.0
PEER_TARGET = 5.0
COMMANDS_TARGET = 3.0
FAILOVER_MARGIN = 1.0  # seconds over the lease time


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The workload and the cluster's settings (scaled-down leases, as in the tests)."""

    users: int
    messages: int
    lease_ttl: float
    tick: float  # member_ttl: RedisCluster's default, half of lease_ttl
    before_kill: float  # seconds of steady load before the kill
    after_kill: float  # seconds of load after the lease time has passed
    n_shards: int = N_SHARDS
    msg_ids: bool = False  # the runtime's producer tells with a msg_id (dedup in Redis)

    @classmethod
    def of(cls, params: Params) -> Sizes:
        if params.quick:
            return cls(200, 8_000, 1.0, 0.2, 0.5, 0.5)
        return cls(1_000, 100_000, 3.0, 0.5, 1.0, 1.0)

    def cluster(self) -> dict[str, Any]:
        """The `RedisCluster` settings of every node (and of the sender)."""
        return {
            "namespace": NAMESPACE,
            "n_shards": self.n_shards,
            "lease_ttl": self.lease_ttl,
            "tick": self.tick,
            "join_grace": 0.0,
        }


def throughput_case(processes: int) -> str:
    return f"{processes} process{'es' if processes > 1 else ''} (msg/s)"


CPU_CASE = "CPU per message, 2 processes (µs)"
COMMANDS_CASE = "Redis commands per message, 2 processes"
FAILOVER_CASE = "failover after kill -9 (s)"


# -- child processes ------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    """A node or worker process exited or did not answer."""


@dataclasses.dataclass
class Child:
    """A node or worker process, its latest status and its trace file."""

    proc: asyncio.subprocess.Process
    trace: Path
    errors: Path
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def handled(self) -> int:
        return int(self.status.get("n", 0))

    async def read(self) -> None:
        from benchmarks._cluster_child import STATUS

        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(STATUS):
                self.status = json.loads(line[len(STATUS) :])

    def command(self, text: str) -> None:
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.write(text.encode() + b"\n")

    def failure(self) -> str:
        try:
            lines = self.errors.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return f"process {self.pid} exited ({self.proc.returncode}): " + (
            lines[-1] if lines else "no output"
        )

    async def stop(self, timeout: float = 20.0) -> None:
        """Ask it to stop; SIGKILL by its PID if it does not within ``timeout``."""
        self.command("stop")
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5.0)

    def kill(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed = True


def child_environment() -> dict[str, str]:
    """This process's environment with its import path, for ``python -P`` children: the
    children import the same build (compiled or not) as this process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _log_file(path: Path) -> BinaryIO:
    return open(path, "wb")  # the caller closes it (a with block)


async def spawn(spec: dict[str, Any], directory: Path, index: int) -> Child:
    trace = directory / f"trace-{spec['role']}-{index}.bin"
    errors = directory / f"stderr-{spec['role']}-{index}.txt"
    spec = {**spec, "trace": str(trace)}
    with _log_file(errors) as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "benchmarks._cluster_child",
            json.dumps(spec),
            cwd=ROOT,
            env=child_environment(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    child = Child(proc, trace, errors)
    child.reader = asyncio.ensure_future(child.read())
    return child


async def until(
    predicate: Callable[[], bool], timeout: float, what: str, children: Sequence[Child] = ()
) -> None:
    """Poll ``predicate`` every few milliseconds; ``ChildFailed`` if a child exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for child in children:
            if child.proc.returncode is not None and not child.killed:
                raise ChildFailed(child.failure())
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.005)


# -- producers ----------------------------------------------------------------------------


class RuntimeSender:
    """The runtime's producer: a `role="sender"` runtime that tells."""

    def __init__(self, url: str, sizes: Sizes) -> None:
        self.url = url
        self.sizes = sizes
        self.rt: Any = None
        self.told = 0

    async def start(self) -> None:
        from actors import UserActor
        from supervisors import RedisCluster, Runtime

        class Unused(UserActor):
            async def on_message(self, message: Any, ctx: Any) -> None:
                raise AssertionError("a sender runs no actors")

        cluster = RedisCluster(self.url, role="sender", **self.sizes.cluster())
        self.rt = Runtime(Unused, cluster=cluster, idle_timeout=None)
        await self.rt.start()

    async def send(self, items: Sequence[tuple[int, int]]) -> None:
        tell = self.rt.tell
        if self.sizes.msg_ids:
            for user, seq in items:
                tell(user, seq, msg_id=f"{user}:{seq}")
        else:
            for user, seq in items:
                tell(user, seq)
        self.told += len(items)
        await asyncio.sleep(0)

    async def flush(self) -> None:
        await until(lambda: self.rt.stats()["cluster"]["sent"] >= self.told, TIMEOUT, "sending")

    async def close(self) -> None:
        if self.rt is not None:
            await self.rt.stop(timeout=5.0)


def producer_for(column: str, url: str, sizes: Sizes) -> Any:
    if column == SUBJECT:
        return RuntimeSender(url, sizes)
    return PRODUCERS[ROLES[column]](url)


# -- the workload and what it did ----------------------------------------------------------


class Workload:
    """Per-user sequence numbers of what was sent, and when."""

    def __init__(self, users: int) -> None:
        self.users = users
        self.last = [-1] * users
        self.sent_at: dict[tuple[int, int], float] = {}

    def next(self, user: int) -> tuple[int, int]:
        self.last[user] += 1
        return user, self.last[user]

    def warm_up(self) -> list[tuple[int, int]]:
        return [self.next(u) for u in range(self.users)]

    def bursts(self, messages: int) -> list[tuple[int, int]]:
        out = []
        for b in range(messages // BURST):
            user = b % self.users
            out += [self.next(user) for _ in range(BURST)]
        return out

    @property
    def total(self) -> int:
        return sum(s + 1 for s in self.last)


def analyse(
    records: list[tuple[int, int, float]], workload: Workload, kill_at: float | None
) -> dict[str, float]:
    """Order violations, duplicates and losses over every process's records; with a
    kill, the longest a message waited after it."""
    records = sorted(records, key=lambda r: r[2])
    seen: set[tuple[int, int]] = set()
    highest: dict[int, int] = {}
    violations = duplicates = 0
    waited = 0.0
    after = 0
    for user, seq, t in records:
        if (user, seq) in seen:
            duplicates += 1
            continue
        seen.add((user, seq))
        if seq < highest.get(user, -1):
            violations += 1
        else:
            highest[user] = seq
        if kill_at is not None and t > kill_at:
            sent = workload.sent_at.get((user, seq), kill_at)
            waited = max(waited, t - max(sent, kill_at))
            after += 1
    out = {
        "order_violations": float(violations),
        "order_violation_pct": 100.0 * violations / max(1, len(seen)),
        "duplicates": float(duplicates),
        "lost": float(workload.total - len(seen)),
    }
    if kill_at is not None:
        out.update(failover_s=waited, handled_after_kill=float(after))
    return out


# -- the server's figures ------------------------------------------------------------------


async def server_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def command_stats(client: Any) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as {command: (calls, µs)} (subcommands as ``config|resetstat``).
    A script's ``evalsha`` counts the time of the commands it calls as well."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }


# -- one run ------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One implementation with ``processes`` processes, started on a flushed server."""

    column: str
    sizes: Sizes
    url: str
    client: Any
    children: list[Child]
    producer: Any
    workload: Workload
    #: Seconds from the kill until the survivors held every shard's lease (the runtime
    #: only; a takeover can still fail after its lease was acquired).
    taken_over: float | None = None

    async def send(self, items: Sequence[tuple[int, int]]) -> None:
        for start in range(0, len(items), CHUNK):
            await self.producer.send(items[start : start + CHUNK])

    def handled(self) -> int:
        return sum(c.handled for c in self.children if not c.killed)

    async def wait_handled(self, total: int, timeout: float = TIMEOUT) -> None:
        await until(lambda: self.handled() >= total, timeout, "handling", self.children)

    async def fresh_status(self) -> None:
        """Wait for a status line of every live child written after now."""
        marks = {id(c): c.status.get("cpu") for c in self.children}
        for child in self.children:
            if not child.killed:
                child.command("status")
        await until(
            lambda: all(c.killed or c.status.get("cpu") != marks[id(c)] for c in self.children),
            10.0,
            "status",
            self.children,
        )

    def cpu(self) -> float:
        return sum(float(c.status.get("cpu", 0.0)) for c in self.children if not c.killed)


@contextlib.asynccontextmanager
async def started(
    column: str,
    processes: int,
    sizes: Sizes,
    url: str,
    directory: Path,
    profiles: Path | None = None,
    pin_server: int | None = None,
) -> AsyncIterator[Run]:
    """Flush the server, start ``processes`` children and the producer; stop them all.

    ``pin_server``: the server's PID, to pin with this process (the producer) to the
    first CPU and the children to the second, as ``taskset`` would.
    """
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.flushall()
    role = ROLES[column]
    spec = {
        "role": role,
        "url": url,
        "cluster": sizes.cluster(),
        "lock_ms": int(sizes.lease_ttl * 1000),
    }
    children: list[Child] = []
    producer = producer_for(column, url, sizes)
    try:
        for i in range(processes):
            if profiles is not None:
                spec["profile"] = str(profiles / f"{role}-{i}.pstats")
            children.append(await spawn(spec, directory, i))
        await until(lambda: all(c.status for c in children), CHILD_START_TIMEOUT, "start", children)
        import actors

        for child in children:
            if bool(child.status["compiled"]) != bool(actors.COMPILED):
                raise ChildFailed("a child process imported another build than this process")
        if role == "node":
            await until(
                lambda: _assigned(children, sizes.n_shards),
                CHILD_START_TIMEOUT,
                "shard assignment",
                children,
            )
        mask = os.sched_getaffinity(0)
        if pin_server is not None:
            first, second = sorted(mask)[:2]
            os.sched_setaffinity(pin_server, {first})
            os.sched_setaffinity(0, {first})
            for child in children:
                os.sched_setaffinity(child.pid, {second})
        await producer.start()
        try:
            yield Run(column, sizes, url, client, children, producer, Workload(sizes.users))
        finally:
            if pin_server is not None:
                os.sched_setaffinity(0, mask)
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pin_server, mask)
    finally:
        try:
            await producer.close()
        finally:
            await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
            await client.aclose()


def _assigned(children: list[Child], shards: int) -> bool:
    """Every node owns exactly its rendezvous share of the shards."""
    from supervisors.cluster._shards import owner_of

    if not all(c.status.get("node") for c in children):
        return False
    nodes = [str(c.status["node"]) for c in children]
    for child in children:
        expected = {s for s in range(shards) if owner_of(s, nodes) == child.status["node"]}
        if set(child.status.get("owned", ())) != expected:
            return False
    return True


async def measure_run(
    column: str,
    processes: int,
    sizes: Sizes,
    url: str,
    *,
    failover: bool,
    profiles: Path | None = None,
    pin_server: int | None = None,
) -> dict[str, float]:
    """Throughput, CPU and commands per message; then, with ``failover``, the kill.

    ``profiles``: a directory where every child process writes a cProfile of the
    throughput phase (``<role>-<i>.pstats``, the loop's thread) and this process one of
    its producer (``producer.pstats``).
    """
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        directory = Path(tmp)
        async with started(column, processes, sizes, url, directory, profiles, pin_server) as run:
            figures = await _throughput(run, profiles)
            kill_at = await _failover(run) if failover else None
            if run.taken_over is not None:
                figures["leases_s"] = run.taken_over
        records: list[tuple[int, int, float]] = []
        from benchmarks._cluster_child import read_trace

        for child in run.children:
            if child.trace.exists():
                records += read_trace(str(child.trace))
        figures.update(analyse(records, run.workload, kill_at))
        if column == SUBJECT and failover:
            figures["takeover_failures"] = float(
                sum(_log_events(c.errors, "cluster_takeover_failed") for c in run.children)
            )
    return figures


def _log_events(path: Path, event: str) -> int:
    """How many of the runtime's log lines in a child's stderr name ``event``."""
    try:
        return path.read_text(errors="replace").count(event)
    except OSError:
        return 0


async def _throughput(run: Run, profiles: Path | None = None) -> dict[str, float]:
    sizes = run.sizes
    progress(f"{run.column}, {len(run.children)} process(es): warm-up")
    await run.send(run.workload.warm_up())
    await run.wait_handled(sizes.users)
    messages = int(sizes.messages * SHARE.get(run.column, 1.0))
    items = run.workload.bursts(messages - messages % (sizes.users * BURST))
    n = len(items)
    await asyncio.sleep(0.1)
    await run.fresh_status()
    cpu0, redis0, own0 = run.cpu(), await server_cpu(run.client), time.process_time()
    await run.client.config_resetstat()
    progress(f"{run.column}, {len(run.children)} process(es): {n:,} messages")
    profiler = None
    if profiles is not None:
        for child in run.children:
            child.command("profile")
        await run.fresh_status()
        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.monotonic()
    await run.send(items)
    await run.producer.flush()
    sent = time.monotonic() - t0
    own = time.process_time() - own0
    await run.wait_handled(sizes.users + n)
    if profiler is not None and profiles is not None:
        profiler.disable()
        profiler.dump_stats(profiles / "producer.pstats")
    last = max(float(c.status["t"]) for c in run.children)
    elapsed = last - t0
    await asyncio.sleep(SETTLE)
    await run.fresh_status()
    stats = await command_stats(run.client)
    for own_command in ("config|resetstat", "info"):
        stats.pop(own_command, None)
    redis_cpu = await server_cpu(run.client) - redis0
    cpu = run.cpu() - cpu0
    commands = {name: calls for name, (calls, _) in stats.items()}
    total = sum(commands.values())
    in_scripts = sum(us for name, (_, us) in stats.items() if name.startswith("eval"))
    out = {
        "msg_per_s": n / elapsed,
        "messages": float(n),
        "users": float(sizes.users),
        "processes": float(len(run.children)),
        "seconds": elapsed,
        "send_s": sent,
        "cpu_us_per_msg": cpu / n * 1e6,
        "producer_cpu_us_per_msg": own / n * 1e6,
        "redis_cpu_us_per_msg": redis_cpu / n * 1e6,
        # the server's time in scripts (EVALSHA: the commands they call included)
        "script_us_per_msg": in_scripts / n,
        "commands_per_msg": total / n,
    }
    for name, calls in sorted(commands.items()):
        out[f"cmd_{name.replace('|', '_')}_per_msg"] = calls / n
    return out


async def _failover(run: Run) -> float:
    """Steady load, SIGKILL of the busiest process, load until the lease has passed."""
    sizes = run.sizes
    for child in run.children:
        child.command("sync")
    await run.fresh_status()
    progress(f"{run.column}: steady load, then kill -9")
    loop = asyncio.get_running_loop()
    start = loop.time()
    before = {id(c): c.handled for c in run.children}
    kill_at: float | None = None
    stop_at = start + sizes.before_kill + sizes.lease_ttl + sizes.after_kill
    users = iter(_round_robin(run.workload.users))
    due = 0
    while loop.time() < stop_at:
        now = loop.time()
        if kill_at is None and now >= start + sizes.before_kill:
            victim = max(run.children, key=lambda c: c.handled - before[id(c)])
            kill_at = time.monotonic()
            victim.kill()
            await victim.proc.wait()
            stop_at = loop.time() + sizes.lease_ttl + sizes.after_kill
        if kill_at is not None and run.taken_over is None and _all_owned(run):
            run.taken_over = time.monotonic() - kill_at
        target = int((loop.time() - start) * LOAD_RATE)
        batch = [run.workload.next(next(users)) for _ in range(target - due)]
        due = target
        t = time.monotonic()
        for item in batch:
            run.workload.sent_at[item] = t
        await run.producer.send(batch)
        await asyncio.sleep(0.01)
    await run.producer.flush()
    await _drain_after_kill(run)
    assert kill_at is not None
    return kill_at


async def _drain_after_kill(run: Run) -> None:
    """Wait until the survivors handled everything, or made no progress for longer
    than a lease or lock lives (what is left then is lost)."""
    from benchmarks._cluster_child import read_trace

    killed = sum(len(read_trace(str(c.trace))) for c in run.children if c.killed)
    expected = run.workload.total
    deadline = time.monotonic() + TIMEOUT
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        handled = run.handled() + killed
        if handled >= expected:
            return
        if handled != last:
            last, since = handled, time.monotonic()
        elif time.monotonic() - since > run.sizes.lease_ttl + 0.5:
            return
        await asyncio.sleep(0.01)


def _all_owned(run: Run) -> bool:
    if run.column != SUBJECT:
        return False
    owned = [s for c in run.children if not c.killed for s in c.status.get("owned", ())]
    return len(set(owned)) == run.sizes.n_shards


def _round_robin(users: int) -> Iterator[int]:
    while True:
        yield from range(users)


# -- the scenario ----------------------------------------------------------------------------


def start_server() -> Any:
    """The embedded server (``supervisors.testing.EmbeddedRedis``) with an append-only
    file fsynced every second, as the cluster is deployed; ``stop()`` it."""
    from supervisors.testing import EmbeddedRedis

    return EmbeddedRedis(appendonly=True)


@contextlib.contextmanager
def embedded_server() -> Iterator[Any]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


def _why_not() -> str | None:
    reason = InorderPeer.missing()
    if reason is not None:
        return reason
    try:
        import redis  # noqa: F401

        from supervisors.testing import EmbeddedRedis  # noqa: F401
    except ImportError:
        return "n/a (no redis-py: pip install -e '.[dev]')"
    return None


async def run_cluster(params: Params) -> list[Cell]:
    sizes = Sizes.of(params)
    cases = [throughput_case(p) for p in PROCESSES] + [CPU_CASE, COMMANDS_CASE, FAILOVER_CASE]
    reason = _why_not()
    if reason is not None:
        return [Cell(case, column, na=reason) for case in cases for column in COLUMNS]
    cells: list[Cell] = []
    shift = params.rotation % len(COLUMNS)
    try:
        server = start_server()
    except Exception as exc:  # no server binary for this machine, or it did not start
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        return [
            Cell(c, column, na=f"n/a (no Redis server: {text})")
            for c in cases
            for column in COLUMNS
        ]
    try:
        for processes in PROCESSES:
            for column in COLUMNS[shift:] + COLUMNS[:shift]:
                failover = processes == 2
                try:
                    r = await measure_run(column, processes, sizes, server.url, failover=failover)
                except Exception as exc:
                    names = [throughput_case(processes)]
                    if failover:
                        names += [CPU_CASE, COMMANDS_CASE, FAILOVER_CASE]
                    cells += [error_cell(case, column, exc) for case in names]
                    continue
                cells += _cells(column, processes, r, sizes)
    finally:
        server.stop()
    return cells


def _cells(column: str, processes: int, r: dict[str, float], sizes: Sizes) -> list[Cell]:
    cells = [Cell(throughput_case(processes), column, r["msg_per_s"], extra=_without(r))]
    if processes != 2:
        return cells
    order = {k: r[k] for k in ("order_violations", "duplicates", "lost")}
    commands = {k: v for k, v in r.items() if k.startswith("cmd_")}
    cells += [
        Cell(CPU_CASE, column, r["cpu_us_per_msg"], higher_is_better=False, extra={
            "producer_cpu_us_per_msg": r["producer_cpu_us_per_msg"],
            "redis_cpu_us_per_msg": r["redis_cpu_us_per_msg"],
        }),
        Cell(COMMANDS_CASE, column, r["commands_per_msg"], higher_is_better=False, extra=commands),
        Cell(FAILOVER_CASE, column, max(r["failover_s"], 1e-6), higher_is_better=False, extra={
            **order,
            "handled_after_kill": r["handled_after_kill"],
            **{k: r[k] for k in ("leases_s", "takeover_failures") if k in r},
            "lease_ttl": sizes.lease_ttl,
            "load_rate": float(LOAD_RATE),
        }),
    ]  # fmt: skip
    return cells


def _without(r: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in r.items() if not k.startswith("cmd_") and k != "msg_per_s"}


def check_cluster(agg: Aggregate, params: Params) -> list[Check]:
    sizes = Sizes.of(params)
    one, two = throughput_case(1), throughput_case(2)
    two_value = agg.value(two)

    def worst(peer: str) -> float | None:
        ratios = [agg.ratio(case, peer) for case in (one, two)]
        return None if None in ratios else min(r for r in ratios if r is not None)

    return [
        at_least(
            f"≥ {size_label(int(PER_NODE_TARGET))} msg/s per node process, 1 process",
            agg.value(one),
            PER_NODE_TARGET,
        ),
        at_least(
            f"≥ {size_label(int(PER_NODE_TARGET))} msg/s per node process, 2 processes",
            None if two_value is None else two_value / 2,
            PER_NODE_TARGET,
        ),
        at_least(
            f"≥ {PEER_TARGET:g}x {LIST_LOCK} (1 and 2 processes)", worst(LIST_LOCK), PEER_TARGET
        ),
        at_least(f"≥ {PEER_TARGET:g}x {SETNX} (1 and 2 processes)", worst(SETNX), PEER_TARGET),
        at_most(
            f"≤ {COMMANDS_TARGET:g} Redis commands per message",
            agg.value(COMMANDS_CASE),
            COMMANDS_TARGET,
        ),
        at_most(
            f"failover ≤ lease {sizes.lease_ttl:g} s + {FAILOVER_MARGIN:g} s",
            agg.value(FAILOVER_CASE),
            sizes.lease_ttl + FAILOVER_MARGIN,
        ),
    ]


SCENARIOS = [
    Scenario(
        "cluster",
        "Cluster mode on Redis",
        f"issue 10: ≥ {size_label(int(PER_NODE_TARGET))} msg/s per node process end to end, "
        f"≥ {PEER_TARGET:g}x each Redis peer, ≤ {COMMANDS_TARGET:g} Redis commands per "
        f"message, failover ≤ lease time + {FAILOVER_MARGIN:g} s",
        "msg/s; µs; commands; s",
        True,
        run_cluster,
        check_cluster,
        "tell-to-handled over 1 and 2 node processes on one embedded Redis, against a "
        "per-user list + lock and a SET NX lock + dedup peer with as many worker "
        "processes; CPU and Redis commands per message; failover after kill -9",
    ),
]
