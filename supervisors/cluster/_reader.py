"""A cluster node's reading: taking a shard over, reading its streams, dispatching.

Taking over: the acquisition gave this owner a consumer group of its own at the
start of each stream, and kept in `tries` what earlier owners had delivered
without committing; those entries are the first the reads bring, in stream
order, and they run redelivered (`ctx.redelivered`, the attempt from their
delivery counts). Reading: one task reads every owned shard (pipelined plain
`XREADGROUP`s, fenced by the group: the next owner destroys it; `qp` first),
drops duplicates by `msg_id`, and hands each entry to the key's local actor;
when nothing is there it waits on a plain blocking `XREAD`, which changes
nothing in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from actors._errors import CodecError
from supervisors.cluster._backoff import Backoff
from supervisors.cluster._pipeline import Call, evalsha_all
from supervisors.cluster._state import (
    Entry,
    Item,
    NodeState,
    RemoteReply,
    Shard,
    entries_of,
    letter_of,
    pack,
)

__all__ = ["Reader"]


class Reader(NodeState):
    """Takeover, reads and dispatch of a node."""

    async def _take_over(self, shard: Shard) -> None:
        """Make a shard just acquired ready to read (`_replay`).

        The takeover counts as in flight while it runs: a handoff asked for meanwhile
        waits for it.
        """
        shard.inflight += 1
        try:
            await self._replay(shard)
        finally:
            shard.inflight -= 1

    async def _replay(self, shard: Shard) -> None:
        """Make ready to read a shard just acquired: its dead letters, and the deliveries
        of what earlier owners left uncommitted. The acquisition made this owner's group
        at the start of the streams, so those entries are the first the reads bring."""
        try:
            await self._load_dead_letters(shard)
            tries = await self.client.hgetall(self.key(shard.index, "tries"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.owned.get(shard.index) is not shard:
                return  # released (a stop, a handoff) while it ran: nothing to report
            self.log.warning("cluster_takeover_failed", shard=shard.index, error=repr(exc))
            self._lose(shard, "takeover failed")
            with contextlib.suppress(Exception):  # still ours: a tick takes it again
                await self._release(
                    keys=[self.key(shard.index, "lease"), self.key(shard.index, "log")],
                    args=[shard.token],
                )
            return
        shard.tries = {(int(f[:1]), bytes(f[2:])): int(n) for f, n in tries.items()}
        if shard.tries:  # an owner left entries uncommitted: it died, or timed out a handoff
            self.counts["takeovers"] += 1
            self.counts["replayed"] += len(shard.tries)
            self.log.info("cluster_shard_taken_over", shard=shard.index, replayed=len(shard.tries))
        if shard.phase == "replay":
            shard.phase = "read"
        self._wake_reader.set()

    async def _load_dead_letters(self, shard: Shard) -> None:
        """Retain the shard's dead letters kept in Redis, so that this owner's
        `dead_letters()` lists them and `redeliver()` works on them."""
        core = self.core
        if core is None:
            return
        ids = await self.client.zrange(self.key(shard.index, "dlqx"), 0, -1)
        ids = [i.decode() for i in ids if i.decode() not in self._known_letters]
        if not ids:
            return
        payloads = await self.client.hmget(self.key(shard.index, "dlq"), ids)
        for letter_id, payload in zip(ids, payloads, strict=True):
            if payload is not None:
                self._known_letters.add(letter_id)
                core.outcomes.retain(letter_of(self.codec, letter_id, payload))

    async def _read_loop(self) -> None:
        cfg = self.config
        # An outage: a growing pause between tries, and a few log lines, not one per try.
        backoff = Backoff(cfg.tick / 4, cfg.tick)
        while not self._closing:
            readable = [
                s
                for s in self.owned.values()
                if s.phase == "read" and s.inflight < cfg.max_inflight
            ]
            if readable and time.monotonic() - self._last_renew > 0.8 * cfg.lease_ttl:
                # Renewals late (a pause): the leases may be gone, and a read would put
                # entries in this owner's group that the next owner counts as delivered
                # (redelivered, one attempt more) though none ran. The tick renews (reads
                # go on) or loses them; `started` fences what was read before.
                readable = []
            got = 0
            if readable:
                # A read in progress counts as in flight: from the XREADGROUP on, its entries are
                # in this owner's consumer, and a handoff must not release the shard under
                # them (the next owner would redeliver them).
                for shard in readable:
                    shard.inflight += 1
                try:
                    for shard in readable:
                        if shard.resync:
                            await self._resync(shard)
                    got = await self._read_once(readable)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never the end of the reading
                    # The read may have moved entries into this owner's consumer before its
                    # answer was lost (Redis stopping): read them from there next time.
                    for shard in readable:
                        shard.resync = True
                    retry = backoff.failed()
                    if retry.log:
                        self.log.warning(
                            "cluster_read_failed",
                            error=repr(exc),
                            failures=retry.failures,
                            retry_in=retry.pause,
                        )
                    await asyncio.sleep(retry.pause)
                    continue
                finally:
                    for shard in readable:
                        shard.inflight -= 1
                if backoff.failures and (failures := backoff.succeeded()):
                    self.log.info("cluster_read_recovered", failures=failures)
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

    async def _resync(self, shard: Shard) -> None:
        """Dispatch the entries of this owner's consumer that it never dispatched: a read
        whose answer was lost (the connection dropped as Redis stopped) had moved them
        there. Those running here or being committed are left alone."""
        known = {(i.stream, i.entry) for i in self.inflight.values() if i.shard is shard}
        known.update((i.stream, i.entry) for i in self._commits if i.shard is shard)
        known.update((i.stream, i.entry) for i in self._flushing if i.shard is shard)
        after_qp = after_q = b"0"
        while True:
            try:
                result = await self.client.execute_command(
                    *self._read_args(shard, after_qp, after_q)
                )
            except Exception as exc:
                if "NOGROUP" not in str(exc):
                    raise  # the read loop retries
                self.counts["fenced"] += 1
                self._lose(shard, "fenced read")
                return
            entries = entries_of(result)
            if not any(entries):
                break
            page = [
                (shard, lane, entry)
                for lane, rows in enumerate(entries)
                for entry in rows
                if (lane, entry[0]) not in known
            ]
            if page:
                await self._hand_over(page)
            if entries[0]:
                after_qp = entries[0][-1][0]
            if entries[1]:
                after_q = entries[1][-1][0]
        shard.resync = False

    def _read_args(self, shard: Shard, after_qp: bytes | str, after_q: bytes | str) -> list[Any]:
        """An XREADGROUP of the shard's streams into this owner's group (`>`: new
        entries; an id: this consumer's own, after it)."""
        index, token = shard.index, shard.token
        return [
            "XREADGROUP",
            "GROUP",
            token,
            token,
            "COUNT",
            self.config.read_count,
            "STREAMS",
            self.key(index, "qp"),
            self.key(index, "q"),
            after_qp,
            after_q,
        ]

    async def _read_once(self, readable: list[Shard]) -> int:
        """One read of every readable shard (pipelined), dispatched; entries read."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in readable:
                pipe.execute_command(*self._read_args(shard, ">", ">"))
            results = await pipe.execute(raise_on_error=False)
        return await self._take_reads(readable, results)

    async def _take_reads(self, shards: list[Shard], results: list[Any]) -> int:
        """Dispatch what one pipelined read brought; returns how many entries it had."""
        fresh: list[Row] = []
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, Exception):
                # The next owner destroyed this one's group (counted once: a resync of this
                # pass may have found it so already).
                if "NOGROUP" in str(result) and self.owned.get(shard.index) is shard:
                    self.counts["fenced"] += 1
                    self._lose(shard, "fenced read")
                continue
            if self.owned.get(shard.index) is not shard:
                continue
            qp, q = entries_of(result)
            if qp:
                shard.last_qp = qp[-1][0]
                fresh += [(shard, 0, entry) for entry in qp]
            if q:
                shard.last_q = q[-1][0]
                fresh += [(shard, 1, entry) for entry in q]
            if not (qp or q) and shard.tries:  # caught up: whatever is left was not read
                shard.tries.clear()
                shard.firsts.clear()
        if fresh:
            await self._hand_over(fresh)
        return len(fresh)

    async def _hand_over(self, rows: list[Row]) -> None:
        """Dispatch entries read into this owner's consumer, duplicates acknowledged; an
        entry an earlier owner left uncommitted (the shard's `tries`) is redelivered.

        While the duplicates are looked up, the entries count as in flight for their
        shard, so a handoff cannot release it under them; a shard lost meanwhile (fenced)
        gets nothing: its next owner has the entries.
        """
        duplicates: set[tuple[int, int, bytes]] = set()
        if any(entry[3] for _, _, entry in rows):  # only a msg_id can be a duplicate
            held = Counter(shard.index for shard, _, _ in rows)
            shards = {shard.index: shard for shard, _, _ in rows}
            for index, n in held.items():
                shards[index].inflight += n
            try:
                duplicates = await self._duplicates(rows)
            finally:
                for index, n in held.items():
                    shards[index].inflight -= n
        owned = self.owned
        dispatch = self._dispatch
        for shard, stream, entry in rows:
            if owned.get(shard.index) is not shard:
                continue
            tries = shard.tries.pop((stream, entry[0]), 0) if shard.tries else 0
            if duplicates and (shard.index, stream, entry[0]) in duplicates:
                self.counts["duplicates"] += 1
                self._commit_now(Item(shard, stream, entry[0], "", entry[5], entry[6]), "duplicate")
            elif tries:
                dispatch(shard, stream, entry, tries + 1, True, shard.firsts)
            else:
                dispatch(shard, stream, entry, 1, False)
            if tries and not shard.tries:  # the last redelivery: the rest is new
                shard.firsts.clear()

    async def _duplicates(self, rows: list[Row]) -> set[tuple[int, int, bytes]]:
        """The entries whose `msg_id` ran already: committed (the shard's `done` set), or
        in flight here. The in-flight ones are taken before the lookup: an original whose
        commit lands during it leaves the in-flight set after `done` has it. An entry is
        named by (shard, stream, id): stream ids repeat across streams."""
        seen: set[str] = set()
        duplicates: set[tuple[int, int, bytes]] = set()
        lookup: dict[int, list[tuple[tuple[int, int, bytes], str]]] = {}
        for shard, stream, entry in rows:
            msg_id = entry[3]
            if not msg_id:
                continue
            name = (shard.index, stream, entry[0])
            # A later copy in this batch is a duplicate whatever the first one turns out
            # to be: run (then live at the copy's dispatch) or a duplicate of a committed
            # original itself (then never live: the copy must not run in its place; found
            # by the chaos test's Redis restart, an outbox rewrite and a producer copy read
            # together after their original had committed).
            if self._live(msg_id) or msg_id in seen:
                duplicates.add(name)
            else:
                seen.add(msg_id)
                lookup.setdefault(shard.index, []).append((name, msg_id))
        backoff = Backoff(0.05, self.config.tick)
        while lookup:
            try:
                answers = await self._done_scores(lookup)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: the entries wait in our consumer
                retry = backoff.failed()
                if retry.log:
                    self.log.warning(
                        "cluster_read_failed",
                        error=repr(exc),
                        failures=retry.failures,
                        retry_in=retry.pause,
                    )
                await asyncio.sleep(retry.pause)
                continue
            for pairs, flags in zip(lookup.values(), answers, strict=True):
                duplicates.update(e for (e, _), seen in zip(pairs, flags, strict=True) if seen)
            break
        return duplicates

    async def _done_scores(self, lookup: dict[int, list[tuple[Any, str]]]) -> list[Any]:
        """Per shard, whether each msg_id to look up was committed within the window (one
        script call per shard, the msg_ids in one blob; one round trip). A mark older
        than the window counts for nothing: the commits trim the set only when they add
        to it."""
        oldest = int(time.time() * 1000 - self.config.dedup_window * 1000)
        calls: list[Call] = [
            (self._done, [self.key(index, "done")], [oldest, pack([m for _, m in pairs])])
            for index, pairs in lookup.items()
        ]
        answers = await evalsha_all(self.client, calls)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer  # a server refusing: looked up again after a pause
        return answers

    def _dispatch(
        self,
        shard: Shard,
        stream: int,
        entry: Entry,
        attempt: int,
        redelivered: bool,
        firsts: set[tuple[Any, int]] | None = None,
    ) -> None:
        """Hand one entry to its key's actor (`firsts`: the keys redelivered so far)."""
        core = self.core
        assert core is not None
        entry_id, data, flags, msg_id, trace, reply_key, corr = entry
        item = Item(shard, stream, entry_id, msg_id, reply_key, corr)
        try:
            if data is None:
                raise CodecError("the entry has no envelope (field e)")
            key, message, priority, _, _, _, expires_at, _ = self.codec._envelope_fields(data)
            item.key = key
        except CodecError as exc:
            self.log.error(
                "message_undecodable", shard=shard.index, entry=entry_id.decode(), error=str(exc)
            )
            item.dead = self.codec.dumps((data or b"", "undecodable", "CodecError", str(exc)))
            self._commit_now(item, "undecodable")
            return
        if firsts is not None:
            # Only a key's first redelivered entry (per lane) can have been running when
            # its owner died: later ones were read ahead, their delivery count says nothing.
            first = (key, stream) not in firsts
            firsts.add((key, stream))
            if first and attempt > self.config.max_deliveries:
                # Delivered that often without an outcome: each owner died while running
                # it (a message that kills its process). Skipped, as a dead letter, so
                # that the key's later messages run and the nodes stop dying in turn.
                self.log.error(
                    "message_poisonous", shard=shard.index, key=key, deliveries=attempt - 1
                )
                item.dead = self.codec.dumps((data, "poison", "", f"{attempt - 1} deliveries"))
                self._commit_now(item, "poison")
                return
        if msg_id:
            if self._live(msg_id):  # a copy replayed beside its original
                self.counts["duplicates"] += 1
                item.msg_id = ""
                self._commit_now(item, "duplicate")
                return
            self._live_ids[msg_id] = item
        self._seq += 1
        seq = self._seq
        self.inflight[seq] = item
        shard.inflight += 1
        if reply_key:
            item.reply = RemoteReply()
        ttl = None
        if expires_at is not None:
            ttl = max(expires_at - time.time(), 1e-6)
        bits = _FLAG_BITS.get(flags)
        if bits is None:
            bits = int(flags)
        core.deliver_remote(
            key,
            message,
            priority,
            bool(bits & 1),
            bool(bits & 2),
            item.reply,
            ttl,
            seq,
            attempt,
            redelivered,
            msg_id or None,
            None if trace is None else trace.decode("ascii", "replace"),  # the sender's
        )


_FLAG_BITS = {b"0": 0, b"1": 1, b"2": 2, b"3": 3}

#: An entry read from a shard: (shard, stream (0: qp, 1: q), the entry).
Row = tuple[Shard, int, Entry]
