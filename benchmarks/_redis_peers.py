"""The two Redis peers of the ``cluster`` scenario: what chat backends write by hand.

Both follow designs from the documents the cluster mode was designed from (issue 10:
"a Redis-backed per-user queue with a dispatcher", and "Redis locks with deduplication
so that parallel instances never process one user's messages at once"), on the same
Redis server as the runtime, with the same producer (one process, pipelined, one
command batch in flight at a time, as the runtime's outbox) and the same number of
worker processes as the runtime has nodes. Workers are plain loops on a synchronous
redis-py client (hiredis), one message or batch at a time, as prefork workers are.

* ``list-lock`` (:class:`ListLockWorker`): a list per user, ``peer:list:<user>``, and a
  ready set of users with waiting messages (a sorted set by arrival, as BullMQ's groups
  and groupmq keep one). The producer does ``RPUSH`` and ``ZADD NX`` per message. A
  worker loops: pick the user waiting longest (``BZPOPMIN``), take its lock (``SET NX
  PX``; when another worker holds it, put the user back at the end of the line), ``LPOP`` up to
  ``LIST_BATCH`` messages, handle them, then release the lock and put the user back in
  the ready set if messages remain, in one script (token-checked, as ffmemes/ff-backend
  PR #240 releases its lock). A message popped by a worker that dies is lost.
* ``setnx-dedup`` (:class:`SetnxDedupWorker`): one shared queue, ``peer:queue``, with
  ``RPUSH`` per message (user, seq, msg_id). A worker loops: pop one message
  (``BLPOP``), take the user's lock (``SET NX PX``, retrying with exponential backoff
  while another worker holds it), check the message id against a dedup set (``SADD``),
  handle, release the lock (token-checked script). Two workers that pop two messages of
  one user race for the lock, so per-user order is not kept: the scenario counts how
  often it breaks.

The handler of both is ``record(user, seq)``, the same as the runtime's actor. Locks
live ``lock_ms`` (the runtime's lease time: the same failure-detection budget).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import msgpack

LIST = "peer:list:{}"
READY = "peer:ready"
LOCK = "peer:lock:{}"
QUEUE = "peer:queue"
SEEN = "peer:seen"

#: Messages a list-lock worker pops at once from a user's list.
LIST_BATCH = 100
#: Seconds a worker blocks waiting for work before it checks for commands again.
BLOCK = 0.05
#: Backoff of a setnx-dedup worker while the user's lock is held, in seconds.
BACKOFF_MIN = 0.0005
BACKOFF_MAX = 0.01

#: KEYS: lock, list, ready. ARGV: token, user, score. Release the lock if still ours;
#: put the user back in the ready set if messages remain (a producer that pushed while
#: we held the lock saw the user already popped from the set).
RELEASE_AND_REARM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('LLEN', KEYS[2]) > 0 then redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2]) end
return 1
"""

#: KEYS: lock. ARGV: token. Release the lock if still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Recorder(Protocol):
    """Where a worker records what it handled (``benchmarks._cluster_child.Trace``); its
    ``record`` may be replaced while the worker runs, so it is looked up every time."""

    def record(self, user: int, seq: int, /) -> None: ...


# -- workers (child processes, benchmarks._cluster_child) --------------------------------


class Worker:
    """A worker process's loop; commands from other threads run between iterations."""

    role: ClassVar[str]

    def __init__(self, url: str, trace: Recorder, lock_ms: int) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.trace = trace
        self.lock_ms = lock_ms
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self.waits = 0  # lock attempts that found the lock held
        self.duplicates = 0

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker's thread before its next message (any thread)."""
        self._calls.append(fn)

    def counts(self) -> dict[str, Any]:
        return {"lock_waits": self.waits, "dedup_hits": self.duplicates}

    def run(self, stopping: threading.Event) -> None:
        calls = self._calls
        while not stopping.is_set():
            while calls:
                calls.popleft()()
            self.step()

    def step(self) -> None:
        raise NotImplementedError


class ListLockWorker(Worker):
    role = "list-lock"

    def __init__(self, url: str, trace: Recorder, lock_ms: int) -> None:
        super().__init__(url, trace, lock_ms)
        self.release = self.redis.register_script(RELEASE_AND_REARM)

    def step(self) -> None:
        r = self.redis
        got = r.bzpopmin(READY, timeout=BLOCK)
        if got is None:
            return
        user = int(got[1])
        lock = LOCK.format(user)
        if not r.set(lock, self.token, nx=True, px=self.lock_ms):
            # Another worker drains this user; back in line, in case that one died
            # (its lock then expires, and someone must come back to the user).
            self.waits += 1
            r.zadd(READY, {str(user): time.time()}, nx=True)
            return
        items = LIST.format(user)
        try:
            for payload in r.lpop(items, LIST_BATCH) or ():
                self.trace.record(user, msgpack.unpackb(payload))
        finally:
            self.release(keys=[lock, items, READY], args=[self.token, user, time.time()])


class SetnxDedupWorker(Worker):
    role = "setnx-dedup"

    def __init__(self, url: str, trace: Recorder, lock_ms: int) -> None:
        super().__init__(url, trace, lock_ms)
        self.release = self.redis.register_script(RELEASE)

    def step(self) -> None:
        r = self.redis
        got = r.blpop([QUEUE], timeout=BLOCK)
        if got is None:
            return
        user, seq, msg_id = msgpack.unpackb(got[1])
        lock = LOCK.format(user)
        delay = BACKOFF_MIN
        while not r.set(lock, self.token, nx=True, px=self.lock_ms):
            self.waits += 1
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        try:
            if r.sadd(SEEN, msg_id):
                self.trace.record(user, seq)
            else:
                self.duplicates += 1
        finally:
            self.release(keys=[lock], args=[self.token])


WORKERS: dict[str, type[Worker]] = {w.role: w for w in (ListLockWorker, SetnxDedupWorker)}


# -- producers (the benchmark's process) -----------------------------------------------------


class PipelinedProducer:
    """Sends batches of messages as pipelines, one batch in flight at a time."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url)
        self._in_flight: asyncio.Task[Any] | None = None
        self.sent = 0

    async def start(self) -> None:
        await self.client.ping()

    def commands(self, pipe: Any, user: int, seq: int) -> None:
        raise NotImplementedError

    async def send(self, items: Sequence[tuple[int, int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for user, seq in items:
            self.commands(pipe, user, seq)
        if self._in_flight is not None:
            await self._in_flight
        self._in_flight = asyncio.ensure_future(pipe.execute())
        self.sent += len(items)
        await asyncio.sleep(0)

    async def flush(self) -> None:
        if self._in_flight is not None:
            await self._in_flight
            self._in_flight = None

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self.client.aclose()


class ListLockProducer(PipelinedProducer):
    def commands(self, pipe: Any, user: int, seq: int) -> None:
        pipe.rpush(LIST.format(user), msgpack.packb(seq))
        pipe.zadd(READY, {str(user): time.time()}, nx=True)


class SetnxDedupProducer(PipelinedProducer):
    def commands(self, pipe: Any, user: int, seq: int) -> None:
        pipe.rpush(QUEUE, msgpack.packb((user, seq, f"{user}:{seq}")))


PRODUCERS: dict[str, type[PipelinedProducer]] = {
    ListLockWorker.role: ListLockProducer,
    SetnxDedupWorker.role: SetnxDedupProducer,
}
