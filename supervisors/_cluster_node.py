"""One process of a cluster on Redis: sending, owning shards, feeding the local actors.

What happens when, for `Runtime(Bot, cluster=RedisCluster(url))`:

1. `start()`: the node connects, checks the namespace's shard count, registers
   the scripts (supervisors/_cluster_scripts.py) and starts its tasks.
2. **Sending** (any process): `tell`/`ask`/`send` encode the message with the
   codec and queue it; the outbox task writes everything queued in one
   pipelined batch of `XADD`s to the key's shard stream (`q`, or `qp` for a
   priority > 0), one batch at a time, so one process's sends keep their order.
   `send` returns once its `XADD` is acknowledged by Redis.
3. **Membership** (every `tick`): a heartbeat in the members set, the live
   members read back, every owned lease renewed in one script; then, by
   rendezvous hashing (supervisors/_shards.py), free leases the node should
   hold are acquired, and shards another live node should hold are handed off.
4. **Taking a shard over**: the pending entries of earlier owners are claimed
   into this owner's consumer and replayed in stream order (redelivered, with
   the attempt from Redis's delivery count) before anything new is read.
5. **Reading**: one task reads every owned shard (fenced, pipelined, `qp`
   first) and hands each entry to the key's local actor; when nothing is
   there it waits on a plain blocking `XREAD`, which changes nothing in Redis.
6. **Committing**: each outcome queues a commit; the commit task writes a
   batch per shard in one fenced script: dedup mark, the ask's reply, the dead
   letter, the acknowledgement, atomically. A `FENCED` answer means the lease
   is gone: the shard is dropped at once, with what still waits for it locally.
7. **Handoff** (a node joined, or this one stops): stop reading the shard, let
   its local messages finish and their commits land, release the lease. The
   next owner has nothing to redeliver. Past `handoff_timeout` it is released
   anyway, and the next owner replays what was left.
8. **Self-fencing**: a node that could not renew for 0.8 x `lease_ttl` drops
   all its shards (another node may own them by now).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors._errors import CodecError, Dropped, FutureTimeout, Interrupted, RecordedError
from supervisors import _cluster_scripts as scripts
from supervisors._shards import plan, shard_of

if TYPE_CHECKING:
    from actors._codec import Codec
    from actors._future import LoopFuture
    from actors._mailbox import Envelope
    from supervisors._cluster import RedisCluster
    from supervisors._core import _Core

__all__ = ["ClusterNode"]


@dataclass(slots=True)
class _Shard:
    index: int
    token: str
    phase: str = "replay"  # replay -> read -> drain
    inflight: int = 0
    last_q: bytes = b"0-0"
    last_qp: bytes = b"0-0"
    drain_since: float = 0.0


@dataclass(slots=True)
class _Item:
    shard: _Shard
    stream: int  # 0: qp, 1: q
    entry: bytes
    msg_id: str
    reply_key: str
    corr: str
    reply: _RemoteReply | None = None
    dead: bytes = b""


class _RemoteReply:
    """Stands in for the ask future of a caller in another process (or this one)."""

    __slots__ = ("_cell", "done", "error", "value")

    def __init__(self) -> None:
        self._cell: Any = None
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        if not self.done:
            self.done, self.value = True, value

    def set_exception(self, exc_info: Any = None) -> None:
        if not self.done:
            self.done = True
            self.error = exc_info[1] if isinstance(exc_info, tuple) else exc_info


class ClusterNode:
    """This process's part of the cluster (see the module documentation)."""

    def __init__(
        self, config: RedisCluster, codec: Codec, loop: asyncio.AbstractEventLoop, log: Any
    ) -> None:
        self.config = config
        self.codec = codec
        self.loop = loop
        self.log = log
        self.node_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ns = config.namespace
        self.ns = ns
        self.reply_key = f"{ns}:reply:{self.node_id}"
        self.members_key = f"{ns}:members"
        self.owned: dict[int, _Shard] = {}
        self.inflight: dict[int, _Item] = {}
        # msg_ids read and not yet committed: a copy read meanwhile is a duplicate too
        # (the `done` set in Redis only has the committed ones).
        self._live_ids: set[str] = set()
        self._seq = 0
        self._outbox: list[tuple[str, dict[str, Any], asyncio.Future[None] | None]] = []
        self._commits: list[_Item] = []
        self._asks: dict[str, tuple[LoopFuture[Any], Any, asyncio.TimerHandle]] = {}
        self._wake_outbox = asyncio.Event()
        self._wake_commits = asyncio.Event()
        self._wake_reader = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._started_at = 0.0
        self._last_renew = 0.0
        self.core: _Core | None = None
        self.client: Any = None
        self.counts = dict.fromkeys(
            (
                "sent",
                "acquired",
                "released",
                "takeovers",
                "fenced",
                "replayed",
                "lost",
                "duplicates",
            ),
            0,
        )
        self.lag: dict[int, int] = {}

    # -- keys -----------------------------------------------------------------------------

    def key(self, shard: int, name: str) -> str:
        return f"{self.ns}:{{{self.ns}:{shard}}}:{name}"

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and check the namespace's shard count (before anything else starts).

        Raises `ImportError` without the `redis` extra, redis-py's `ConnectionError`
        if the server cannot be reached, `ValueError` on a shard count mismatch.
        """
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # the optional extra
            msg = "the cluster mode needs redis-py: pip install 'inorder[redis]'"
            raise ImportError(msg) from exc
        self.client = aioredis.Redis.from_url(self.config.url, max_connections=32)
        config_key = f"{self.ns}:config"
        try:
            await self.client.hsetnx(config_key, "n_shards", self.config.n_shards)
            stored = int(await self.client.hget(config_key, "n_shards"))
        except BaseException:
            await self.client.aclose()
            raise
        if stored != self.config.n_shards:
            await self.client.aclose()
            msg = (
                f"namespace {self.ns!r} has {stored} shards in Redis, this node is configured "
                f"with n_shards={self.config.n_shards}: every node must use the same number"
            )
            raise ValueError(msg)
        c = self.client
        self._acquire = c.register_script(scripts.ACQUIRE)
        self._renew = c.register_script(scripts.RENEW)
        self._release = c.register_script(scripts.RELEASE)
        self._read = c.register_script(scripts.READ)
        self._claim = c.register_script(scripts.CLAIM)
        self._commit = c.register_script(scripts.COMMIT)

    def run(self, core: _Core | None) -> None:
        """Start the tasks (`core` None: a sender only, which runs no actors)."""
        self.core = core
        self._started_at = time.monotonic()
        self._last_renew = self._started_at
        spawn = self.loop.create_task
        self._tasks = [spawn(self._outbox_loop()), spawn(self._reply_loop())]
        if core is not None and self.config.role == "node":
            self._tasks += [
                spawn(self._tick_loop()),
                spawn(self._read_loop()),
                spawn(self._commit_loop()),
            ]
        self.log.info("cluster_node_started", node=self.node_id, role=self.config.role)

    async def stop(self, timeout: float) -> None:
        """Hand every shard off (drain, commit, release), leave, disconnect."""
        deadline = time.monotonic() + timeout
        for shard in self.owned.values():
            if shard.phase != "drain":
                shard.phase, shard.drain_since = "drain", time.monotonic()
        while self.owned and time.monotonic() < deadline:
            await self._handoffs(force=False)
            if self.owned:
                await asyncio.sleep(0.01)
        await self._handoffs(force=True)
        self._closing = True
        with contextlib.suppress(Exception):
            await self.client.zrem(self.members_key, self.node_id)
        # A cancellation can land inside the Redis client, which may turn it into a
        # connection error that a loop catches: cancel until every task has ended.
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for future, _, timer in self._asks.values():
            timer.cancel()
            future.set_exception((RuntimeError, RuntimeError("the node stopped"), None))
        self._asks.clear()
        await self.client.aclose()

    # -- sending ----------------------------------------------------------------------------

    def enqueue(
        self,
        key: str | int,
        data: bytes,
        priority: int,
        flags: int,
        reply: tuple[LoopFuture[Any], str] | None,
        msg_id: str | None,
        waiter: asyncio.Future[None] | None,
    ) -> None:
        """Queue one encoded message for the outbox (loop thread)."""
        shard = shard_of(key, self.config.n_shards)
        fields: dict[str, Any] = {"e": data, "f": flags}
        if msg_id is not None:
            fields["i"] = msg_id
        if reply is not None:
            future, corr = reply
            fields["r"], fields["c"] = self.reply_key, corr
            timer = self.loop.call_later(self.config.ask_timeout, self._ask_expired, corr)
            self._asks[corr] = (future, key, timer)
        self._outbox.append((self.key(shard, "qp" if priority else "q"), fields, waiter))
        self._wake_outbox.set()

    async def _outbox_loop(self) -> None:
        while not self._closing:
            await self._wake_outbox.wait()
            self._wake_outbox.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            pipe = self.client.pipeline(transaction=False)
            for stream, fields, _ in batch:
                pipe.xadd(stream, fields)
            try:
                await pipe.execute()
            except Exception as exc:
                self.log.error("cluster_send_failed", error=repr(exc), count=len(batch))
                for _, _, waiter in batch:
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(exc)
                continue
            self.counts["sent"] += len(batch)
            for _, _, waiter in batch:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _ask_expired(self, corr: str) -> None:
        entry = self._asks.pop(corr, None)
        if entry is not None:
            future, key, _ = entry
            error = FutureTimeout(
                f"no reply from the cluster within {self.config.ask_timeout} s for key {key!r}"
            )
            future.set_exception((FutureTimeout, error, None))

    async def _reply_loop(self) -> None:
        client = self.client
        while not self._closing:
            try:
                got = await client.blpop([self.reply_key], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("cluster_reply_read_failed", error=repr(exc))
                await asyncio.sleep(0.1)
                continue
            if got is None:
                continue
            try:
                corr, ok, value = self.codec.loads(got[1])
            except (CodecError, TypeError, ValueError) as exc:
                self.log.error("cluster_reply_undecodable", error=str(exc))
                continue
            entry = self._asks.pop(corr, None)
            if entry is None:
                continue  # it timed out already
            future, key, timer = entry
            timer.cancel()
            if ok:
                future.set(value)
            else:
                error = _error_of(key, value)
                future.set_exception((type(error), error, None))

    # -- membership and leases ------------------------------------------------------------

    async def _tick_loop(self) -> None:
        cfg = self.config
        while not self._closing:
            began = time.monotonic()
            try:
                await self._tick(began)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("cluster_tick_failed", error=repr(exc))
                if self.owned and began - self._last_renew > 0.8 * cfg.lease_ttl:
                    self.log.error("cluster_self_fenced", shards=len(self.owned))
                    for shard in list(self.owned.values()):
                        self._lose(shard, "self-fenced")
            await asyncio.sleep(max(0.0, cfg.tick - (time.monotonic() - began)))

    async def _tick(self, began: float) -> None:
        cfg = self.config
        c = self.client
        seconds, micros = await c.time()
        now_ms = seconds * 1000 + micros // 1000
        pipe = c.pipeline(transaction=False)
        pipe.zadd(self.members_key, {self.node_id: now_ms + int(cfg.member_ttl * 1000)})
        pipe.zrangebyscore(self.members_key, now_ms, "+inf")
        pipe.zremrangebyscore(self.members_key, "-inf", now_ms - 60_000)
        _, members, _ = await pipe.execute()
        live = [m.decode() for m in members]
        owned = list(self.owned.values())
        if owned:
            ttl_ms = int(cfg.lease_ttl * 1000)
            renewed = await self._renew(
                keys=[self.key(s.index, "lease") for s in owned],
                args=[ttl_ms, *(s.token for s in owned)],
            )
            for shard, ok in zip(owned, renewed, strict=True):
                if not ok and shard.index in self.owned:
                    self._lose(shard, "lease lost")
        self._last_renew = began
        joining = began - self._started_at < cfg.join_grace
        draining = sum(1 for s in self.owned.values() if s.phase == "drain")
        todo = plan(
            self.node_id,
            live,
            set(self.owned),
            cfg.n_shards,
            joining=joining,
            handing_off=draining,
            max_handoffs=cfg.max_handoffs,
        )
        for index in todo.hand_off:
            shard = self.owned[index]
            if shard.phase != "drain":
                shard.phase, shard.drain_since = "drain", time.monotonic()
        if todo.acquire and not self._closing:
            pipe = c.pipeline(transaction=False)
            for index in todo.acquire:
                await self._acquire(  # queued on the pipeline (redis-py's scripts are async)
                    keys=[self.key(index, n) for n in ("lease", "epoch", "log", "q", "qp")],
                    args=[self.node_id, int(cfg.lease_ttl * 1000)],
                    client=pipe,
                )
            tokens = await pipe.execute()
            for index, token in zip(todo.acquire, tokens, strict=True):
                if token:
                    shard = _Shard(index, token.decode())
                    self.owned[index] = shard
                    self.counts["acquired"] += 1
                    task = self.loop.create_task(self._take_over(shard))
                    self._tasks.append(task)
                    task.add_done_callback(self._forget_task)
        await self._handoffs(force=False)
        await self._measure_lag()

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _handoffs(self, *, force: bool) -> None:
        now = time.monotonic()
        for shard in [s for s in self.owned.values() if s.phase == "drain"]:
            queued = any(item.shard is shard for item in self._commits)
            timed_out = now - shard.drain_since > self.config.handoff_timeout
            if (shard.inflight or queued) and not (force or timed_out):
                continue
            if shard.inflight or queued:
                self._lose(shard, "handoff timed out")  # the next owner replays the rest
            else:
                self.owned.pop(shard.index, None)
            with contextlib.suppress(Exception):
                await self._release(
                    keys=[self.key(shard.index, "lease"), self.key(shard.index, "log")],
                    args=[shard.token],
                )
            self.counts["released"] += 1

    async def _measure_lag(self) -> None:
        shards = list(self.owned)
        if not shards:
            self.lag = {}
            return
        pipe = self.client.pipeline(transaction=False)
        for index in shards:
            pipe.xlen(self.key(index, "q"))
            pipe.xlen(self.key(index, "qp"))
        lengths = await pipe.execute()
        self.lag = {index: lengths[2 * i] + lengths[2 * i + 1] for i, index in enumerate(shards)}

    def _lose(self, shard: _Shard, why: str) -> None:
        """The lease is gone: forget the shard and what waits for it here (the next owner
        replays those). A handler already running finishes; its commit will be fenced."""
        if self.owned.get(shard.index) is not shard:
            return
        del self.owned[shard.index]
        self.counts["lost"] += 1
        self.log.warning("cluster_shard_lost", shard=shard.index, reason=why)
        core = self.core
        if core is None:
            return
        n = self.config.n_shards
        for cell in list(core.cells.values()):
            if shard_of(cell.key, n) != shard.index:
                continue
            waiting = cell.mailbox.take_all()
            core.pending -= len(waiting)
            for envelope in waiting:
                core.outcomes.on_dropped(
                    cell.key, envelope, "fenced", envelope.attempt - 1, log=False
                )
        for item in self._commits:
            if item.shard is shard and item.msg_id:
                self._live_ids.discard(item.msg_id)
        self._commits = [item for item in self._commits if item.shard is not shard]

    # -- reading --------------------------------------------------------------------------

    async def _take_over(self, shard: _Shard) -> None:
        """Claim what earlier owners left pending and replay it in order, then read new."""
        try:
            for stream in ("qp", "q"):
                cursor = b"0-0"
                while True:
                    cursor, _ids = await self._claim(
                        keys=[self.key(shard.index, "lease"), self.key(shard.index, stream)],
                        args=[shard.token, cursor, 500],
                    )
                    if cursor in (b"0-0", "0-0"):
                        break
            after_qp = after_q = b"0"
            while True:
                result = await self._read(
                    keys=[self.key(shard.index, n) for n in ("lease", "qp", "q")],
                    args=[shard.token, self.config.read_count, after_qp, after_q],
                )
                entries = _entries(result)
                if not any(entries):
                    break
                counts = await self._deliveries(shard, entries)
                for lane, rows in enumerate(entries):
                    for entry_id, fields in rows:
                        self._dispatch(shard, lane, entry_id, fields, counts.get(entry_id, 2), True)
                        self.counts["replayed"] += 1
                if entries[0]:
                    after_qp = entries[0][-1][0]
                if entries[1]:
                    after_q = entries[1][-1][0]
            groups = await self._group_positions(shard)
            shard.last_qp, shard.last_q = groups
            if self.counts["replayed"]:
                self.counts["takeovers"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if "FENCED" in str(exc):
                self.counts["fenced"] += 1
            self.log.warning("cluster_takeover_failed", shard=shard.index, error=repr(exc))
            self._lose(shard, "takeover failed")
            return
        if shard.phase == "replay":
            shard.phase = "read"
        self._wake_reader.set()

    async def _deliveries(
        self, shard: _Shard, entries: list[list[tuple[bytes, dict[bytes, bytes]]]]
    ) -> dict[bytes, int]:
        counts: dict[bytes, int] = {}
        for stream, rows in zip(("qp", "q"), entries, strict=True):
            if rows:
                pending = await self.client.xpending_range(
                    self.key(shard.index, stream),
                    "rt",
                    min=rows[0][0],
                    max=rows[-1][0],
                    count=len(rows),
                    consumername=shard.token,
                )
                for row in pending:
                    counts[row["message_id"]] = int(row["times_delivered"])
        return counts

    async def _group_positions(self, shard: _Shard) -> tuple[bytes, bytes]:
        out = []
        for stream in ("qp", "q"):
            groups = await self.client.xinfo_groups(self.key(shard.index, stream))
            last = next(
                (g["last-delivered-id"] for g in groups if g["name"] in (b"rt", "rt")), b"0-0"
            )
            out.append(last if isinstance(last, bytes) else str(last).encode())
        return out[0], out[1]

    async def _read_loop(self) -> None:
        cfg = self.config
        while not self._closing:
            readable = [
                s
                for s in self.owned.values()
                if s.phase == "read" and s.inflight < cfg.max_inflight
            ]
            got = 0
            if readable:
                pipe = self.client.pipeline(transaction=False)
                for shard in readable:
                    await self._read(
                        keys=[self.key(shard.index, n) for n in ("lease", "qp", "q")],
                        args=[shard.token, cfg.read_count, ">", ">"],
                        client=pipe,
                    )
                try:
                    results = await pipe.execute(raise_on_error=False)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.log.warning("cluster_read_failed", error=repr(exc))
                    await asyncio.sleep(cfg.tick / 4)
                    continue
                got = await self._take_reads(readable, results)
            if got:
                await asyncio.sleep(0)
                continue
            streams = {}
            for shard in readable:
                streams[self.key(shard.index, "qp")] = shard.last_qp
                streams[self.key(shard.index, "q")] = shard.last_q
            self._wake_reader.clear()
            if streams:
                with contextlib.suppress(Exception):
                    await self.client.xread(streams, count=1, block=max(1, int(cfg.tick * 500)))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_reader.wait(), cfg.tick / 2)

    async def _take_reads(self, shards: list[_Shard], results: list[Any]) -> int:
        got = 0
        fresh: list[tuple[_Shard, int, bytes, dict[bytes, bytes]]] = []
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, Exception):
                if "FENCED" in str(result):
                    self.counts["fenced"] += 1
                    self._lose(shard, "fenced read")
                continue
            if self.owned.get(shard.index) is not shard:
                continue
            entries = _entries(result)
            for stream, rows in enumerate(entries):
                for entry_id, fields in rows:
                    fresh.append((shard, stream, entry_id, fields))
                if rows:
                    if stream == 0:
                        shard.last_qp = rows[-1][0]
                    else:
                        shard.last_q = rows[-1][0]
        if not fresh:
            return 0
        ids = [f.get(b"i", b"").decode() for _, _, _, f in fresh]
        done: dict[str, bool] = {}
        by_shard: dict[int, list[str]] = {}
        for (shard, _, _, _), msg_id in zip(fresh, ids, strict=True):
            if msg_id:
                by_shard.setdefault(shard.index, []).append(msg_id)
        for index, msg_ids in by_shard.items():
            scores = await self.client.zmscore(self.key(index, "done"), msg_ids)
            done.update({m: s is not None for m, s in zip(msg_ids, scores, strict=True)})
        for (shard, stream, entry_id, fields), msg_id in zip(fresh, ids, strict=True):
            if msg_id and (done.get(msg_id) or msg_id in self._live_ids):
                self.counts["duplicates"] += 1
                self._commit_now(
                    _Item(shard, stream, entry_id, "", *_reply_of(fields)), "duplicate"
                )
                continue
            self._dispatch(shard, stream, entry_id, fields, 1, False)
            got += 1
        return got or len(fresh)

    def _dispatch(
        self,
        shard: _Shard,
        stream: int,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        attempt: int,
        redelivered: bool,
    ) -> None:
        core = self.core
        assert core is not None
        reply_key, corr = _reply_of(fields)
        msg_id = fields.get(b"i", b"").decode()
        item = _Item(shard, stream, entry_id, msg_id, reply_key, corr)
        try:
            record = self.codec.decode_envelope(fields[b"e"])
        except (CodecError, KeyError) as exc:
            self.log.error(
                "message_undecodable", shard=shard.index, entry=entry_id.decode(), error=str(exc)
            )
            item.dead = self.codec.dumps(
                (fields.get(b"e", b""), "undecodable", "CodecError", str(exc))
            )
            self._commit_now(item, "undecodable")
            return
        if msg_id:
            if msg_id in self._live_ids:  # a copy replayed beside its original
                self.counts["duplicates"] += 1
                item.msg_id = ""
                self._commit_now(item, "duplicate")
                return
            self._live_ids.add(msg_id)
        self._seq += 1
        seq = self._seq
        self.inflight[seq] = item
        shard.inflight += 1
        if reply_key:
            item.reply = _RemoteReply()
        flags = int(fields.get(b"f", b"0"))
        ttl = None
        if record.expires_at is not None:
            ttl = max(record.expires_at - time.time(), 1e-6)
        core.deliver_remote(
            record.key,
            record.message,
            record.priority,
            bool(flags & 1),
            bool(flags & 2),
            item.reply,
            ttl,
            seq,
            attempt,
            redelivered,
        )

    # -- outcomes (the router's tracker and the outcomes' journal hook) ----------------------

    def started(self, envelope: Envelope) -> None:
        """A handler starts: nothing to record (Redis's delivery count is the attempt),
        unless the node could not renew its leases for too long (a pause, a partition):
        then it fences itself first, so that what still waits here does not run beside
        the shards' next owner."""
        if self.owned and time.monotonic() - self._last_renew > 0.8 * self.config.lease_ttl:
            self.log.error("cluster_self_fenced", shards=len(self.owned))
            for shard in list(self.owned.values()):
                self._lose(shard, "self-fenced")

    def ack(self, envelope: Envelope) -> None:
        item = self.inflight.pop(envelope.seq, None)
        envelope.seq = 0
        if item is not None:
            self._queue_commit(item)

    def dead_letter(
        self,
        key: str | int,
        envelope: Envelope,
        reason: str,
        error: BaseException | None,
        cause: BaseException | None,
    ) -> int | None:
        item = self.inflight.pop(envelope.seq, None)
        envelope.seq = 0
        if item is None:
            return None
        if reason in ("shutdown", "fenced"):
            item.shard.inflight -= 1  # stays pending in Redis: its next owner runs it
            self._live_ids.discard(item.msg_id)
            return None
        described = (type(error).__qualname__, str(error)) if error is not None else ("", "")
        try:
            item.dead = self.codec.encode_envelope(
                key,
                envelope.message,
                priority=envelope.priority,
                attempt=envelope.attempt,
                accepted_at=time.time(),
            )
            item.dead = self.codec.dumps((item.dead, reason, *described))
        except CodecError:
            item.dead = self.codec.dumps((b"", reason, *described))
        self._queue_commit(item)
        return None

    def describe(self, seq: int) -> tuple[str | None, int | None]:
        """(msg_id, fencing epoch) of a message this node runs (`ctx.message_id`, `ctx.epoch`)."""
        item = self.inflight.get(seq)
        if item is None:
            return None, None
        return item.msg_id or None, int(item.shard.token.rsplit("|", 1)[1])

    def forget_dead_letters(self, ids: list[int]) -> None:
        """Dead letters live in the shards' streams in Redis: nothing kept here."""

    def _commit_now(self, item: _Item, reason: str) -> None:
        item.shard.inflight += 1
        if item.reply_key:
            item.reply = _RemoteReply()
            item.reply.set_exception(Dropped("?", reason))
        self._queue_commit(item)

    def _queue_commit(self, item: _Item) -> None:
        self._commits.append(item)
        self._wake_commits.set()

    async def _commit_loop(self) -> None:
        while not self._closing:
            await self._wake_commits.wait()
            self._wake_commits.clear()
            batch, self._commits = self._commits, []
            if batch:
                await self._flush_commits(batch)

    async def _flush_commits(self, batch: list[_Item]) -> None:
        by_shard: dict[int, list[_Item]] = {}
        for item in batch:
            by_shard.setdefault(item.shard.index, []).append(item)
        seconds = time.time()
        window = int(self.config.dedup_window * 1000)
        pipe = self.client.pipeline(transaction=False)
        order = []
        for index, items in by_shard.items():
            shard = items[0].shard
            keys = [self.key(index, n) for n in ("lease", "qp", "q", "done", "dlq")]
            args: list[Any] = [shard.token, int(seconds * 1000), window]
            for item in items:
                reply_index = 0
                payload = b""
                if item.reply_key:
                    keys.append(item.reply_key)
                    reply_index = len(keys)
                    payload = self._reply_payload(item)
                args += [item.stream, item.entry, item.msg_id, reply_index, payload, item.dead]
            await self._commit(keys=keys, args=args, client=pipe)
            order.append((shard, items))
        while True:
            try:
                results = await pipe.execute(raise_on_error=False)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis unreachable: retried before any later batch
                self.log.warning("cluster_commit_retry", error=repr(exc))
                await asyncio.sleep(self.config.tick / 4)
        for (shard, items), result in zip(order, results, strict=True):
            shard.inflight -= len(items)
            for item in items:  # committed (in `done`), or fenced (the next owner checks)
                if item.msg_id:
                    self._live_ids.discard(item.msg_id)
            if isinstance(result, Exception):
                if "FENCED" in str(result):
                    self.counts["fenced"] += 1
                    self._lose(shard, "fenced commit")
                else:
                    self.log.error("cluster_commit_failed", shard=shard.index, error=repr(result))

    def _reply_payload(self, item: _Item) -> bytes:
        reply = item.reply
        if reply is None or not reply.done:
            return self.codec.dumps((item.corr, False, ("Dropped", "lost", "")))
        if reply.error is None:
            try:
                return self.codec.dumps((item.corr, True, reply.value))
            except CodecError as exc:
                return self.codec.dumps((item.corr, False, ("CodecError", str(exc), "")))
        error = reply.error
        reason = getattr(error, "reason", "") or ""
        return self.codec.dumps((item.corr, False, (type(error).__qualname__, str(error), reason)))

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "role": self.config.role,
            "shards_owned": sorted(self.owned),
            "lag": dict(self.lag),
            "in_flight": len(self.inflight),
            **self.counts,
        }


def _entries(result: Any) -> list[list[tuple[bytes, dict[bytes, bytes]]]]:
    """[qp rows, q rows] from an XREADGROUP reply over (qp, q)."""
    out: list[list[tuple[bytes, dict[bytes, bytes]]]] = [[], []]
    for stream_name, rows in result or []:
        index = 0 if stream_name.endswith(b":qp") else 1
        for entry_id, fields in rows:
            if fields is None:  # deleted while pending
                continue
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            out[index].append((entry_id, fields))
    return out


def _reply_of(fields: dict[bytes, bytes]) -> tuple[str, str]:
    return fields.get(b"r", b"").decode(), fields.get(b"c", b"").decode()


def _error_of(key: Any, value: Any) -> BaseException:
    type_name, text, reason = value
    if type_name == "Dropped":
        return Dropped(key, reason or "dropped")
    if type_name == "Interrupted":
        return Interrupted(key, reason or "interrupted")
    return RecordedError(type_name, text)
