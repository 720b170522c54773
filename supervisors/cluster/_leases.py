"""A cluster node's membership and leases: heartbeats, renewals, acquisitions, handoffs.

Every `tick`: a heartbeat in the members set (times from Redis, so the nodes'
clocks do not matter), the live members read back, every owned lease renewed in
one script (a lease not renewed is lost: `_lose`), then the plan of
supervisors/cluster/_shards.py: free leases this node should hold are acquired (each
starts a takeover), shards another live node should hold are handed off
(drained, then released). A node that cannot reach Redis for 0.8 x `lease_ttl`
drops its shards (self-fencing). Every few seconds the tick also publishes the
node's summary for `ClusterInspector` (supervisors/cluster/_summary.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from supervisors._snapshots import MemorySnapshots
from supervisors.cluster._backoff import Backoff
from supervisors.cluster._shards import plan
from supervisors.cluster._state import NodeState, Shard

__all__ = ["Leases"]


class Leases(NodeState):
    """Membership, leases and handoffs of a node."""

    async def _tick_loop(self) -> None:
        cfg = self.config
        # The pace stays one tick (self-fencing counts on it); only the logging backs off.
        backoff = Backoff(cfg.tick, cfg.tick)
        while not self._closing:
            began = time.monotonic()
            try:
                await self._tick(began)
                if backoff.failures and (failures := backoff.succeeded()):
                    self.log.info("cluster_tick_recovered", failures=failures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = backoff.failed()
                if retry.log:
                    self.log.warning(
                        "cluster_tick_failed", error=repr(exc), failures=retry.failures
                    )
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
        async with c.pipeline(transaction=False) as pipe:  # reset whatever happens
            member_ms = int(cfg.effective_member_ttl * 1000)
            pipe.zadd(self.members_key, {self.node_id: now_ms + member_ms})
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
        if todo.acquire and not (self._closing or self._stopping):
            async with c.pipeline(transaction=False) as pipe:
                for index in todo.acquire:
                    await self._acquire(  # queued on the pipeline (redis-py's scripts are async)
                        keys=[
                            self.key(index, n)
                            for n in ("lease", "epoch", "log", "q", "qp", "tries")
                        ],
                        args=[self.node_id, int(cfg.lease_ttl * 1000)],
                        client=pipe,
                    )
                tokens = await pipe.execute()
            for index, token in zip(todo.acquire, tokens, strict=True):
                if token:
                    shard = Shard(index, token.decode())
                    self.owned[index] = shard
                    self.counts["acquired"] += 1
                    self._forget_states(index)
                    task = self.loop.create_task(self._take_over(shard))
                    self._tasks.append(task)
                    task.add_done_callback(self._forget_task)
        await self._handoffs(force=False)
        await self._measure_lag()
        await self.summaries.maybe_publish(self, now_ms)  # every few ticks; never raises

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _handoffs(self, *, force: bool) -> None:
        now = time.monotonic()
        for shard in [s for s in self.owned.values() if s.phase == "drain"]:
            if self.owned.get(shard.index) is not shard:
                continue  # released meanwhile by the other caller (the tick, or stop())
            queued = any(item.shard is shard for item in self._commits)
            timed_out = now - shard.drain_since > self.config.handoff_timeout
            if (shard.inflight or queued) and not (force or timed_out):
                continue
            if shard.inflight or queued:
                self._lose(shard, "handoff timed out")  # the next owner replays the rest
            else:
                self.owned.pop(shard.index, None)
            released = 0
            with contextlib.suppress(Exception):  # if it fails, the lease expires instead
                released = await self._release(
                    keys=[self.key(shard.index, "lease"), self.key(shard.index, "log")],
                    args=[shard.token],
                )
            self.counts["released"] += bool(released)

    async def _measure_lag(self) -> None:
        shards = list(self.owned)
        if not shards:
            self.lag = {}
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for index in shards:
                pipe.xlen(self.key(index, "q"))
                pipe.xlen(self.key(index, "qp"))
            lengths = await pipe.execute()
        self.lag = {index: lengths[2 * i] + lengths[2 * i + 1] for i, index in enumerate(shards)}

    def _forget_states(self, index: int) -> None:
        """Forget the actor states kept here for the keys of a shard just acquired: they
        may have run on other nodes since this one last held it, so a state kept from
        then is stale (README, "Scaling out": state does not move between nodes)."""
        snapshots = self.core.snapshots if self.core is not None else None
        if isinstance(snapshots, MemorySnapshots):
            shard_of = self.shard_of
            snapshots.forget(lambda key: shard_of(key) == index)

    def _lose(self, shard: Shard, why: str) -> None:
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
        for cell in list(core.cells.values()):
            if self.shard_of(cell.key) != shard.index:
                continue
            waiting = cell.mailbox.take_all()
            core.pending -= len(waiting)
            for envelope in waiting:
                core.outcomes.on_dropped(
                    cell.key, envelope, "fenced", envelope.attempt - 1, log=False
                )
        for item in self._commits:
            if item.shard is shard:
                self._forget_live(item)
        self._commits = [item for item in self._commits if item.shard is not shard]
