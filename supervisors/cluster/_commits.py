"""A cluster node's outcomes: every message's commit, fenced, with its reply.

The router and the outcome book tell the node how each message ended (`ack`,
`dead_letter`); the node queues a commit, and its commit task writes a batch
per shard in one fenced script call, carrying the batch as one blob (a plain
acknowledgement is its entry id alone): dedup marks, the asks' replies, the
dead letters, the acknowledgements, atomically, in completion order (a failed
batch is retried before any later one). A `FENCED` answer drops the shard.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from actors._errors import CodecError, Dropped
from supervisors.cluster._backoff import Backoff
from supervisors.cluster._pipeline import Call, evalsha_all
from supervisors.cluster._state import Item, NodeState, RemoteReply, Shard, pack

if TYPE_CHECKING:
    from actors._mailbox import Envelope

__all__ = ["Commits"]


class Commits(NodeState):
    """Outcomes, commits and replies of a node."""

    def started(self, envelope: Envelope) -> bool:
        """A handler is about to start on `envelope`, just taken from its mailbox: True if
        it may. Nothing is recorded (Redis's delivery count is the attempt).

        A node that could not renew its leases for 0.8 x `lease_ttl` (a pause, a
        partition) fences itself first: every shard is dropped with what waits for it
        here, since another node may own them by now. Then a message whose shard this
        node no longer holds under the epoch it was read in (the one just taken, or a
        retry put back after the shard was lost) does not run beside the shard's next
        owner: it ends `Dropped("fenced")`, which is no dead letter (it stays pending in
        Redis, and the next owner runs it), and False tells the cell to take the next."""
        if self.owned and time.monotonic() - self._last_renew > 0.8 * self.config.lease_ttl:
            self.log.error("cluster_self_fenced", shards=len(self.owned))
            for shard in list(self.owned.values()):
                self._lose(shard, "self-fenced")
        item = self.inflight.get(envelope.seq)
        if item is None or self.owned.get(item.shard.index) is item.shard:
            return True
        core = self.core
        assert core is not None  # a node runs messages only with its runtime's core
        core.outcomes.on_dropped(item.key, envelope, "fenced", envelope.attempt - 1, log=False)
        return False

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
    ) -> str | None:
        """Queue the message's dead letter, kept in Redis with its ack; the letter's id."""
        item = self.inflight.pop(envelope.seq, None)
        envelope.seq = 0
        if item is None:
            return None
        if reason in ("shutdown", "fenced"):
            item.shard.inflight -= 1  # stays pending in Redis: its next owner runs it
            self._forget_live(item)
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
        item.dead_id = f"{item.shard.index}:{uuid.uuid4().hex}"
        self._known_letters.add(item.dead_id)  # retained here already
        self._queue_commit(item)
        return item.dead_id

    def describe(self, seq: int) -> tuple[str | None, int | None]:
        """(msg_id, fencing epoch) of a message this node runs (`ctx.message_id`, `ctx.epoch`)."""
        item = self.inflight.get(seq)
        if item is None:
            return None, None
        return item.msg_id or None, int(item.shard.token.rsplit("|", 1)[1])

    def forget_dead_letters(self, ids: list[int | str]) -> None:
        """Dead letters live in the shards' streams in Redis: nothing kept here."""

    def _commit_now(self, item: Item, reason: str) -> None:
        item.shard.inflight += 1
        if item.dead and not item.dead_id:
            item.dead_id = f"{item.shard.index}:{uuid.uuid4().hex}"
        if item.reply_key:
            item.reply = RemoteReply()
            item.reply.set_exception(Dropped("?", reason))
        self._queue_commit(item)

    def _queue_commit(self, item: Item) -> None:
        self._commits.append(item)
        self._wake_commits.set()

    async def _commit_loop(self) -> None:
        while not self._closing:
            await self._wake_commits.wait()
            self._wake_commits.clear()
            batch, self._commits = self._commits, []
            if batch:
                self._flushing = batch
                try:
                    await self._flush_commits(batch)
                finally:
                    self._flushing = []

    async def _flush_commits(self, batch: list[Item]) -> None:
        by_shard: dict[int, list[Item]] = {}
        for item in batch:
            if (items := by_shard.get(item.shard.index)) is not None:
                items.append(item)
            else:
                by_shard[item.shard.index] = [item]
        seconds = time.time()
        window = int(self.config.dedup_window * 1000)
        calls: list[Call] = []
        order: list[tuple[Shard, list[Item]]] = []
        for index, items in by_shard.items():
            shard = items[0].shard
            keys = [self.key(index, n) for n in ("lease", "qp", "q", "done", "dlq", "dlqx")]
            # The blob: a plain acknowledgement is its entry id alone.
            acks: tuple[list[bytes], list[bytes]] = ([], [])
            msg_ids: list[str] = []
            replies: list[tuple[int, bytes]] = []
            letters: list[tuple[str, bytes]] = []
            lists: dict[str, int] = {}  # reply list -> its index in KEYS (from 1)
            for item in items:
                acks[item.stream].append(item.entry)
                if item.msg_id:
                    msg_ids.append(item.msg_id)
                if item.reply_key:
                    if (at := lists.get(item.reply_key)) is None:
                        keys.append(item.reply_key)
                        at = lists[item.reply_key] = len(keys)
                    replies.append((at, self._reply_payload(item)))
                if item.dead_id:
                    letters.append((item.dead_id, item.dead))
            blob = pack((acks[0], acks[1], msg_ids, replies, letters))
            args = [shard.token, int(seconds * 1000), window, self.dead_letter_limit, blob]
            calls.append((self._commit, keys, args))
            order.append((shard, items))
        results = await self._run_commits(calls)
        for (shard, items), result in zip(order, results, strict=True):
            shard.inflight -= len(items)
            for item in items:  # committed (in `done`), or fenced (the next owner checks)
                self._forget_live(item)
            if isinstance(result, Exception):
                self.counts["fenced"] += 1
                self._lose(shard, "fenced commit")

    async def _run_commits(self, calls: list[Call]) -> list[Any]:
        """Each call's answer: its count, or its `FENCED` error. Retried with a growing
        pause: every call while Redis is unreachable (which ran is unknown, and running a
        commit twice changes nothing), and a call Redis refused (out of memory: the
        commits' deletions are what frees it), never one that ran."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        backoff = Backoff(self.config.tick / 4, self.config.tick)
        while True:
            try:
                answers = await evalsha_all(self.client, [calls[i] for i in todo])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis unreachable: retried before any later batch
                error: BaseException = exc
            else:
                refused = []
                for i, answer in zip(todo, answers, strict=True):
                    if isinstance(answer, Exception) and "FENCED" not in str(answer):
                        refused.append(i)
                    else:
                        results[i] = answer
                if not refused:
                    break
                todo, error = refused, answers[todo.index(refused[0])]
            retry = backoff.failed()
            if retry.log:  # an outage logs a few lines, not one per try
                self.log.warning(
                    "cluster_commit_retry",
                    error=repr(error),
                    failures=retry.failures,
                    retry_in=retry.pause,
                )
            await asyncio.sleep(retry.pause)
        if failures := backoff.succeeded():
            self.log.info("cluster_commit_recovered", failures=failures)
        return results

    def _reply_payload(self, item: Item) -> bytes:
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
