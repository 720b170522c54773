"""`ClusterInspector`: a cluster read and operated straight from Redis, by no node.

What happens when (each node publishes a summary of its figures every few
seconds: supervisors/cluster/_summary.py):

* **`status()`**: one pipelined read of the members set, the summaries of the
  members, and per shard its lease (owner, epoch, time left), its streams'
  lengths (the lag, as the owner measures it: entries not yet acknowledged,
  since acknowledged ones are deleted), the entries delivered but not yet
  acknowledged (`XPENDING`) and its dead letters. The result has the keys of
  `Runtime.stats()` summed over the nodes, and `cluster` with the detail.
* **`dead_letters()`**, **`redeliver(id)`**, **`purge(ids)`**: on the shards'
  `dlq`/`dlqx` (supervisors/cluster/_scripts.py). A redelivery is one script that
  adds the letter's message back to its shard's stream, in the producers' own
  format, and only then removes the letter: atomic, and never a message lost.

An owner keeps the dead letters it loaded when it took its shards over in its
own memory (`Runtime.dead_letters()`); those redelivered or purged here leave
that list at its next takeover. Needs redis-py (`inorder[redis]`) when used,
not when imported.
"""

from __future__ import annotations

import contextlib
import heapq
from typing import TYPE_CHECKING, Any, Final

import msgpack

from actors.journal._codec import Codec
from supervisors.cluster._options import RedisCluster, redact_url
from supervisors.cluster._summary import RATES, summary_key

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["ClusterInspector", "describe_letter", "one_line", "peek_envelope"]

_COUNTS: Final = (
    *RATES,
    "live_actors",
    "known_keys",
    "pending",
    "in_flight",
    "dead_letters",
    "restarts",
)

#: KEYS: dlq, dlqx, stream. ARGV: letter id, the envelope. The letter's message back on its
#: shard's stream (as a producer's XADD writes it), then the letter gone; 0 if it is gone.
_REDELIVER: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[3], '*', 'e', ARGV[2], 'f', 0)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def peek_envelope(data: bytes) -> tuple[Any, int, int, float | None, bytes]:
    """(key, priority, attempt, accepted_at, message bytes) of an encoded envelope, read
    without decoding its message (which may need types this process never registered)."""
    record = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=msgpack.ExtType)
    _, key, priority, attempt, accepted_at, _, body, _ = record
    return key, int(priority), int(attempt), accepted_at, bytes(body)


def describe_letter(
    codec: Codec, letter_id: str, payload: bytes, added_ms: float | None
) -> dict[str, Any]:
    """A dead letter kept in Redis as the `Source` protocol's dict (see _source.py)."""
    letter: dict[str, Any] = {
        "id": letter_id,
        "key": "?",
        "reason": "?",
        "priority": 0,
        "attempts": 0,
        "error": None,
        "message": f"<{len(payload)} bytes>",
        "added_at": None if added_ms is None else added_ms / 1000,
    }
    try:
        envelope, reason, type_name, text = codec.loads(payload)
        letter["reason"] = str(reason)
        if type_name or text:
            letter["error"] = one_line(f"{type_name}: {text}" if type_name else str(text))
        key, priority, attempt, _, body = peek_envelope(envelope)
    except Exception:  # a letter this version does not read: shown as its size
        return letter
    letter.update(key=key, priority=priority, attempts=attempt, message=f"<{len(body)} bytes>")
    with contextlib.suppress(Exception):  # a type this process never registered: its size
        letter["message"] = one_line(repr(codec.loads(body)))
    return letter


def one_line(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ClusterInspector:
    """A cluster's figures and dead letters, from Redis (implements `Source`).

    `cluster` is a `RedisCluster` (its URL and namespace) or a `redis://` URL with
    `namespace`; `client`, an open `redis.asyncio.Redis`, is used instead of
    connecting (and not closed). `timeout` bounds every command. Use it as
    `async with ClusterInspector(url) as inspector:` or call `aclose()`.

    Raises (from its calls) redis-py's `ConnectionError`/`TimeoutError` when Redis
    does not answer, and `LookupError` when it holds no cluster of that namespace.
    """

    def __init__(
        self,
        cluster: RedisCluster | str,
        *,
        namespace: str = "inorder",
        client: Any = None,
        codec: Codec | None = None,
        timeout: float = 5.0,
    ) -> None:
        config = (
            cluster
            if isinstance(cluster, RedisCluster)
            else RedisCluster(cluster, namespace=namespace)
        )
        self.url = config.url
        self.ns = config.namespace
        self.codec = codec or Codec()
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._script: Any = None

    def __repr__(self) -> str:
        return f"<ClusterInspector {redact_url(self.url)!r} namespace={self.ns!r}>"

    async def __aenter__(self) -> ClusterInspector:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose(close_connection_pool=True)
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:
                msg = "inspecting a cluster needs redis-py: pip install 'inorder[redis]'"
                raise ImportError(msg) from exc
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
        return self._client

    def key(self, shard: int, name: str) -> str:
        return f"{self.ns}:{{{self.ns}:{shard}}}:{name}"

    async def n_shards(self) -> int:
        stored = await self.client.hget(f"{self.ns}:config", "n_shards")
        if stored is None:
            msg = f"this Redis holds no inorder cluster with namespace {self.ns!r}"
            raise LookupError(msg)
        return int(stored)

    async def status(self) -> dict[str, Any]:
        n = await self.n_shards()
        c = self.client
        seconds, micros = await c.time()
        now_ms = seconds * 1000 + micros // 1000
        members = [
            (m.decode(), int(s))
            for m, s in await c.zrange(f"{self.ns}:members", 0, -1, withscores=True)
        ]
        async with c.pipeline(transaction=False) as pipe:
            for node_id, _ in members:
                pipe.get(summary_key(self.ns, node_id))
            for shard in range(n):
                pipe.get(self.key(shard, "lease"))
                pipe.pttl(self.key(shard, "lease"))
                pipe.get(self.key(shard, "epoch"))
                for stream in ("q", "qp"):
                    pipe.xlen(self.key(shard, stream))
                    pipe.xinfo_groups(self.key(shard, stream))  # the owner's, or none
                pipe.zcard(self.key(shard, "dlqx"))
            answers = await pipe.execute(raise_on_error=False)
        for answer in answers:
            if isinstance(answer, Exception) and "no such key" not in str(answer):
                raise answer
        summaries, rows = answers[: len(members)], answers[len(members) :]
        nodes = [
            self._node(node_id, expiry, blob, now_ms)
            for (node_id, expiry), blob in zip(members, summaries, strict=True)
        ]
        shards = [_shard(i, rows[8 * i : 8 * i + 8]) for i in range(n)]
        return _totals(self.ns, n, now_ms, nodes, shards)

    def _node(self, node_id: str, expiry_ms: int, blob: Any, now_ms: int) -> dict[str, Any]:
        summary = None
        if isinstance(blob, bytes):
            try:
                summary = msgpack.unpackb(blob, raw=False, strict_map_key=False)
            except Exception:  # another version's summary: the node is listed without it
                summary = None
        alive = expiry_ms >= now_ms
        return {
            "node": node_id,
            "alive": alive,
            "seen_ms_ago": None
            if summary is None
            else max(0, now_ms - int(summary.get("at", now_ms))),
            "summary": summary,
        }

    async def dead_letters(self) -> list[dict[str, Any]]:
        n = await self.n_shards()
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(n):
                pipe.zrange(self.key(shard, "dlqx"), 0, -1, withscores=True)
            orders = await pipe.execute()
        wanted = [
            (s, [(i.decode(), at) for i, at in rows]) for s, rows in enumerate(orders) if rows
        ]
        if not wanted:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for shard, rows in wanted:
                pipe.hmget(self.key(shard, "dlq"), [i for i, _ in rows])
            payloads = await pipe.execute()
        letters = []
        for (_, rows), blobs in zip(wanted, payloads, strict=True):
            for (letter_id, at), blob in zip(rows, blobs, strict=True):
                if blob is not None:
                    letters.append(describe_letter(self.codec, letter_id, blob, at))
        letters.sort(key=lambda letter: letter["added_at"] or 0.0)
        return letters

    def _shard_of(self, letter_id: str, n: int) -> int | None:
        head = letter_id.partition(":")[0]
        return int(head) if head.isdigit() and int(head) < n else None

    async def redeliver(self, letter_id: str) -> bool:
        """Raises `ValueError` for a letter that holds no message to send (one whose
        message could not be encoded when it was dead-lettered)."""
        n = await self.n_shards()
        shard = self._shard_of(letter_id, n)
        if shard is None:
            return False
        payload = await self.client.hget(self.key(shard, "dlq"), letter_id)
        if payload is None:
            return False
        try:
            envelope = self.codec.loads(payload)[0]
            priority = peek_envelope(envelope)[1]
        except Exception as exc:
            msg = f"dead letter {letter_id} holds no message that can be sent again ({exc})"
            raise ValueError(msg) from exc
        if self._script is None:
            self._script = self.client.register_script(_REDELIVER)
        stream = self.key(shard, "qp" if priority else "q")
        keys = [self.key(shard, "dlq"), self.key(shard, "dlqx"), stream]
        return bool(await self._script(keys=keys, args=[letter_id, envelope]))

    async def purge(self, ids: list[str] | None = None) -> int:
        n = await self.n_shards()
        async with self.client.pipeline(transaction=False) as pipe:
            if ids is None:
                for shard in range(n):
                    pipe.zcard(self.key(shard, "dlqx"))
                    pipe.delete(self.key(shard, "dlq"), self.key(shard, "dlqx"))
                return sum((await pipe.execute())[::2])
            for letter_id in ids:
                index = self._shard_of(letter_id, n)
                if index is not None:
                    pipe.hdel(self.key(index, "dlq"), letter_id)
                    pipe.zrem(self.key(index, "dlqx"), letter_id)
            return sum((await pipe.execute())[::2])


def _shard(index: int, row: list[Any]) -> dict[str, Any]:
    lease, ttl, epoch, q_len, q_pending, qp_len, qp_pending, letters = row
    owner, current = None, None
    if isinstance(lease, bytes):
        owner, _, token_epoch = lease.decode().rpartition("|")
        current = int(token_epoch) if token_epoch.isdigit() else None
    pending = sum(
        int(group["pending"])
        for groups in (q_pending, qp_pending)
        if isinstance(groups, list)
        for group in groups
    )
    return {
        "shard": index,
        "owner": owner,
        "epoch": current if current is not None else int(epoch or 0),
        "lease_ms": int(ttl) if owner is not None and int(ttl) >= 0 else None,
        "lag": sum(int(x) for x in (q_len, qp_len) if isinstance(x, int)),
        "pending": pending,
        "dead_letters": int(letters) if isinstance(letters, int) else 0,
    }


def _totals(
    ns: str, n: int, now_ms: int, nodes: list[dict[str, Any]], shards: list[dict[str, Any]]
) -> dict[str, Any]:
    """`Runtime.stats()`'s keys over the nodes that published a summary, and `cluster`."""
    live = [node["summary"] for node in nodes if node["alive"] and node["summary"]]
    out: dict[str, Any] = {n_: sum(int(s.get(n_, 0)) for s in live) for n_ in _COUNTS}
    out["rates"] = {
        r: round(sum(float(s.get("rates", {}).get(r, 0.0)) for s in live), 3) for r in RATES
    }
    deepest = heapq.nlargest(20, ((int(d), str(k)) for s in live for k, d in s.get("deepest", [])))
    out["pending_by_key"] = {key: depth for depth, key in deepest}
    for name in ("wait_ms", "run_ms"):  # percentiles do not add up: the worst node's
        figures = [s[name] for s in live if isinstance(s.get(name), dict)]
        worst = {
            p: max((float(f.get(p, 0.0)) for f in figures), default=0.0)
            for p in ("p50", "p90", "p99", "max")
        }
        out[name] = {"count": sum(int(f.get("count", 0)) for f in figures), **worst}
    counters: dict[str, int] = {}
    for s in live:
        for name, value in (s.get("cluster") or {}).items():
            counters[name] = counters.get(name, 0) + int(value)
    out["now"] = now_ms / 1000
    out["cluster"] = {
        "namespace": ns,
        "n_shards": n,
        "nodes": nodes,
        "shards": shards,
        "owned": sum(1 for s in shards if s["owner"] is not None),
        "lag": {str(s["shard"]): s["lag"] for s in shards},
        "total_lag": sum(s["lag"] for s in shards),
        "stream_pending": sum(s["pending"] for s in shards),
        "stored_dead_letters": sum(s["dead_letters"] for s in shards),
        **counters,
    }
    return out
