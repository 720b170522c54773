"""One process of a cluster on Redis: sending, owning shards, feeding the local actors.

What happens when, for `Runtime(Bot, cluster=RedisCluster(url))`:

1. `start()`: the node connects, checks the namespace's shard count, registers
   the scripts (supervisors/cluster/_scripts.py) and starts its tasks.
2. **Sending** (any process): `tell`/`ask`/`send` encode the message with the
   codec and queue it; the outbox task writes everything queued in one
   pipeline, a `SEND` script call per shard carrying the shard's messages as one
   blob (their `XADD`s to `q`, or `qp` for a priority > 0, run in Lua), one
   batch at a time, so one process's sends keep their order. `send` returns once
   its batch is acknowledged by Redis.
3. **Membership** (every `tick`): a heartbeat in the members set, the live
   members read back, every owned lease renewed in one script; then, by
   rendezvous hashing (supervisors/cluster/_shards.py), free leases the node should
   hold are acquired, and shards another live node should hold are handed off.
4. **Taking a shard over**: the acquisition makes this owner's consumer group,
   at the start of the streams, and destroys the earlier owners' groups, keeping
   what they had delivered without a commit in `tries`; those entries come first
   in the reads, redelivered, with the attempt from their delivery counts.
5. **Reading**: one task reads every owned shard (pipelined `XREADGROUP`s into
   the owner's group, fenced by it, `qp` first) and hands each entry to the
   key's local actor; when nothing is
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
import time
from typing import TYPE_CHECKING, Any

from actors._errors import CodecError, FutureTimeout, MailboxFull, RuntimeStopped
from supervisors.cluster import _scripts as scripts
from supervisors.cluster._backoff import Backoff
from supervisors.cluster._commits import Commits
from supervisors.cluster._leases import Leases
from supervisors.cluster._pipeline import Call, evalsha_all
from supervisors.cluster._reader import Reader
from supervisors.cluster._state import error_of, pack

if TYPE_CHECKING:
    from actors._future import LoopFuture
    from supervisors._core import _Core

__all__ = ["MAX_OUTBOX", "ClusterNode"]

#: Messages that may wait in a node's outbox for Redis; past it, sending raises MailboxFull.
MAX_OUTBOX = 100_000

#: Entries per `SEND` call: a long outage's backlog goes out in calls that keep the
#: server's other clients waiting a few milliseconds at most.
SEND_CHUNK = 1000

_FLAGS = (b"0", b"1", b"2", b"3")  # an entry's `f` field: 1 interrupt, 2 clear


class ClusterNode(Leases, Reader, Commits):
    """This process's part of the cluster (see the module documentation).

    Its state is `NodeState`'s (supervisors/cluster/_state.py); its parts are the
    mixins `Leases`, `Reader` and `Commits`.
    """

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
        # A pool that makes a command wait for a free connection rather than fail: a
        # node taking over many shards at once must not lose takeovers to the pool size.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.config.url, max_connections=32, timeout=None
        )
        self.client = aioredis.Redis(connection_pool=pool)
        # The reads' replies as the server sent them (entries_of takes them so): redis-py's
        # parser would make a dict of every entry's fields, in Python, to be unpacked again.
        self.client.set_response_callback("XREADGROUP", _as_sent)
        config_key = f"{self.ns}:config"
        try:
            await self.client.hsetnx(config_key, "n_shards", self.config.n_shards)
            stored = int(await self.client.hget(config_key, "n_shards"))
        except BaseException:
            await self.client.aclose(close_connection_pool=True)
            raise
        if stored != self.config.n_shards:
            await self.client.aclose(close_connection_pool=True)
            msg = (
                f"namespace {self.ns!r} has {stored} shards in Redis, this node is configured "
                f"with n_shards={self.config.n_shards}: every node must use the same number"
            )
            raise ValueError(msg)
        c = self.client
        self._acquire = c.register_script(scripts.ACQUIRE)
        self._renew = c.register_script(scripts.RENEW)
        self._release = c.register_script(scripts.RELEASE)
        self._commit = c.register_script(scripts.COMMIT)
        self._send = c.register_script(scripts.SEND)
        self._done = c.register_script(scripts.DONE)

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
        self._stopping = True  # no more acquisitions: it is still the owner by hashing
        while self.owned and time.monotonic() < deadline:
            for shard in self.owned.values():  # one acquired meanwhile drains too
                if shard.phase != "drain":
                    shard.phase, shard.drain_since = "drain", time.monotonic()
            await self._handoffs(force=False)
            if self.owned:
                await asyncio.sleep(0.01)
        for shard in self.owned.values():
            shard.phase = "drain"
        await self._handoffs(force=True)
        self._closing = True
        with contextlib.suppress(Exception):
            await self.client.zrem(self.members_key, self.node_id)
            await self.client.delete(self.summaries.key)
        # A cancellation can land inside the Redis client, which may turn it into a
        # connection error that a loop catches: cancel until every task has ended.
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        # Replies that arrived after the reply task's last read (the drain just answered
        # them), then the asks nobody will answer here any more.
        with contextlib.suppress(Exception):
            while self._asks and (payload := await self.client.lpop(self.reply_key)):
                self._answer(payload)
        for future, key, timer in self._asks.values():
            timer.cancel()
            error = RuntimeStopped(f"the runtime stopped before the reply for key {key!r} came")
            future.set_exception((RuntimeStopped, error, None))
        self._asks.clear()
        await self.client.aclose(close_connection_pool=True)

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
        trace: str | None = None,
    ) -> None:
        """Queue one encoded message for the outbox (loop thread); `trace`: its sender's
        trace context (tracing on), kept in the entry's `t` field.

        Raises `MailboxFull` (scope "cluster") while `MAX_OUTBOX` messages wait to be
        written (Redis is unreachable): backpressure at the call site, not memory
        growing without bound.
        """
        if len(self._outbox) >= MAX_OUTBOX:
            raise MailboxFull(key, MAX_OUTBOX, scope="cluster")
        # The entry as the SEND script appends it: its lane (1: qp, 2: q), then its fields.
        # `f` is left out only when nothing would follow it (flags 0, the common message: a
        # smaller entry to write and read). Readers of earlier versions take a 4- or
        # 6-field entry as `e`, `f`[, `i`] by position, and any other one by name.
        entry: list[Any] = [1 if priority else 2, "e", data]
        if flags or msg_id is not None or trace is not None or reply is not None:
            entry += ("f", _FLAGS[flags])
        if msg_id is not None:
            entry += ("i", msg_id)
        if trace is not None:
            entry += ("t", trace)
        if reply is not None:
            future, corr = reply
            entry += ("r", self.reply_key, "c", corr)
            timer = self.loop.call_later(self.config.ask_timeout, self._ask_expired, corr)
            self._asks[corr] = (future, key, timer)
        self._outbox.append((self.shard_of(key), entry, waiter))
        self._wake_outbox.set()

    async def _outbox_loop(self) -> None:
        """Write what is queued, one batch at a time (one process's sends keep their order).

        A batch Redis does not take (it is restarting, the network is down) is retried
        with a growing pause (`Backoff`: 50 ms doubled up to `tick`), ahead of anything
        queued later, until it is written or the node stops; a `tell` that returned is
        therefore never dropped for an outage (a batch cut off half-way may be written
        twice: at-least-once, and a `msg_id` makes the copy a no-op). `enqueue` refuses
        new messages while `MAX_OUTBOX` wait. The outage logs `cluster_send_retry` at
        its 1st, 2nd, 4th... failure, and `cluster_send_recovered` once it is over.
        """
        backoff = Backoff(0.05, self.config.tick)
        batch: list[tuple[int, Any, asyncio.Future[None] | None]] = []
        try:
            while not self._closing:
                await self._wake_outbox.wait()
                self._wake_outbox.clear()
                batch, self._outbox = self._outbox, []
                calls, forgets = self._send_calls(batch)
                while True:
                    try:
                        calls, error = await self._write(calls, forgets)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # which calls ran is unknown: all again
                        error = exc
                    if error is None:
                        break
                    if self._closing:  # stop() cancels this task: what is unsent fails
                        return
                    retry = backoff.failed()
                    if retry.log:
                        self.log.warning(
                            "cluster_send_retry",
                            error=repr(error),
                            count=len(batch),
                            failures=retry.failures,
                            retry_in=retry.pause,
                        )
                    await asyncio.sleep(retry.pause)
                if failures := backoff.succeeded():
                    self.log.info("cluster_send_recovered", failures=failures, count=len(batch))
                self.counts["sent"] += len(batch)
                for _, _, waiter in batch:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                batch = []
        finally:
            for _, _, waiter in [*batch, *self._outbox]:  # the node stopped with these unsent
                if waiter is not None and not waiter.done():
                    waiter.set_exception(RuntimeStopped("the node stopped before sending it"))

    def _send_calls(
        self, batch: list[tuple[int, Any, asyncio.Future[None] | None]]
    ) -> tuple[list[Call], list[dict[str, str]]]:
        """The SEND calls of a batch (per shard, in order, `SEND_CHUNK` entries each) and
        the dead letters to forget after them."""
        by_shard: dict[int, list[Any]] = {}
        forgets: list[dict[str, str]] = []
        for shard, entry, _ in batch:
            if shard < 0:
                forgets.append(entry)
            elif (entries := by_shard.get(shard)) is not None:
                entries.append(entry)
            else:
                by_shard[shard] = [entry]
        calls: list[Call] = []
        for shard, entries in by_shard.items():
            keys = [self.key(shard, "qp"), self.key(shard, "q")]
            calls.extend(
                (self._send, keys, [pack(entries[i : i + SEND_CHUNK])])
                for i in range(0, len(entries), SEND_CHUNK)
            )
        return calls, forgets

    async def _write(
        self, calls: list[Call], forgets: list[dict[str, str]]
    ) -> tuple[list[Call], BaseException | None]:
        """Run the SEND calls, then forget the dead letters. Returns the calls Redis
        refused (out of memory...), to be tried again, with the first refusal; the
        others ran, and trying them again would write them twice."""
        answers = await evalsha_all(self.client, calls) if calls else []
        refused = [c for c, a in zip(calls, answers, strict=True) if isinstance(a, Exception)]
        if refused:
            return refused, next(a for a in answers if isinstance(a, Exception))
        if forgets:  # after the messages: a crash in between leaves both, never neither
            async with self.client.pipeline(transaction=False) as pipe:
                for fields in forgets:
                    pipe.hdel(fields["dlq"], fields["id"])
                    pipe.zrem(fields["dlqx"], fields["id"])
                await pipe.execute()
        return [], None

    def forget_letter(self, letter_id: str) -> None:
        """Remove a dead letter kept in Redis once it was redelivered (loop thread).

        Queued behind the redelivered message in the outbox, which writes in order: a
        crash in between leaves the letter and the message, never neither.
        """
        shard = int(letter_id.partition(":")[0])
        fields = {"dlq": self.key(shard, "dlq"), "dlqx": self.key(shard, "dlqx"), "id": letter_id}
        self._outbox.append((-1, fields, None))
        self._wake_outbox.set()

    def _ask_expired(self, corr: str) -> None:
        entry = self._asks.pop(corr, None)
        if entry is not None:
            future, key, _ = entry
            error = FutureTimeout(
                f"no reply from the cluster within {self.config.ask_timeout} s for key {key!r}"
            )
            future.set_exception((FutureTimeout, error, None))

    async def _reply_loop(self) -> None:
        """Read this node's replies (a blocking pop, a second at a time) and answer the asks.

        While Redis is unreachable, a read is retried after a growing pause (`Backoff`:
        50 ms doubled up to `tick`); the outage logs `cluster_reply_read_failed` at its
        1st, 2nd, 4th... failure, and `cluster_reply_read_recovered` once it is over.
        """
        client = self.client
        backoff = Backoff(0.05, self.config.tick)
        while not self._closing:
            try:
                got = await client.blpop([self.reply_key], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = backoff.failed()
                if retry.log:
                    self.log.warning(
                        "cluster_reply_read_failed",
                        error=repr(exc),
                        failures=retry.failures,
                        retry_in=retry.pause,
                    )
                await asyncio.sleep(retry.pause)
                continue
            if failures := backoff.succeeded():
                self.log.info("cluster_reply_read_recovered", failures=failures)
            if got is not None:
                self._answer(got[1])

    def _answer(self, payload: bytes) -> None:
        """Resolve the ask a reply is for (none: it timed out already)."""
        try:
            corr, ok, value = self.codec.loads(payload)
        except (CodecError, TypeError, ValueError) as exc:
            self.log.error("cluster_reply_undecodable", error=str(exc))
            return
        entry = self._asks.pop(corr, None)
        if entry is None:
            return
        future, key, timer = entry
        timer.cancel()
        if ok:
            future.set(value)
        else:
            error = error_of(key, value)
            future.set_exception((type(error), error, None))

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


def _as_sent(response: Any, **_options: Any) -> Any:
    return response
