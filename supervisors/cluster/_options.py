"""`RedisCluster`: the option that makes a `Runtime` one node of several on Redis.

    Runtime(Bot, cluster=RedisCluster("redis://127.0.0.1:6379/0"))

With it, `tell`/`ask`/`send` (and a handler's `ctx.tell`) from any process go
to the key's shard stream in Redis; the one node that holds the shard's lease
reads it and hands each message to the key's local actor, with the same order,
priorities, supervision and outcomes as in one process (supervisors/cluster/_node.py
says how). `role="sender"` joins as a sender only: a webhook front end that runs
no actors.

Everything is checked here, at construction (G9); nothing connects before
`Runtime.start()`. The Redis client (redis-py's asyncio API) is the optional
extra `inorder[redis]`: importing this module does not need it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, final

__all__ = ["RedisCluster", "check_cluster", "redact_url"]

_NAMESPACE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@final
@dataclass(frozen=True, slots=True)
class RedisCluster:
    """Where the cluster's Redis is, and its settings (the same in every process).

    Args:
        url: `redis://` or `rediss://` (TLS); username, password and database
            number come from the URL (`redis://user:secret@host:6379/0`).
        namespace: the prefix of every Redis key this cluster uses (letters,
            digits, `_.-`); several clusters can share one Redis.
        n_shards: keys map to this many shards, the unit of ownership; fixed for
            the life of the namespace (a node refuses to start on a mismatch).
        role: `"node"` runs actors and owns shards; `"sender"` only sends.
        lease_ttl: seconds a shard's lease lasts without renewal; a node that died
            loses its shards after at most this long, and another node takes them
            over at its next tick after that.
        tick: seconds between membership heartbeats and lease renewals; less than
            half of `lease_ttl`.
        member_ttl: seconds after its last heartbeat that a node counts as gone
            (the others then plan its shards for themselves). None (the default):
            half of `lease_ttl` (`effective_member_ttl`). Given, it must be more than
            `tick` (a live node would drop out between heartbeats) and at most
            `lease_ttl` (a dead node's shards would wait for its membership to
            expire, not its leases).
        join_grace: seconds a new node waits before taking shards.
        max_handoffs: shards a node hands off at once when another joins.
        handoff_timeout: seconds a handoff waits for the shard's messages to drain
            before it releases the lease anyway.
        read_count: entries read per shard per read.
        max_inflight: entries of one shard read but not yet committed; past it the
            node stops reading that shard (the backlog stays in Redis).
        ask_timeout: seconds an `ask` waits for its reply before `FutureTimeout`;
            the owner drops a request still waiting then (`Dropped("expired")`).
        dedup_window: seconds a `msg_id` is remembered: a second message with the
            same id within it is acknowledged without running.
        max_deliveries: a message delivered this many times without an outcome (each
            owner died while running it: a message that kills its process) is
            dead-lettered ("poison") instead of run again.
        max_payload: bytes of one encoded message (the codec's limit).
    """

    url: str
    namespace: str = "inorder"
    n_shards: int = 64
    role: Literal["node", "sender"] = "node"
    lease_ttl: float = 10.0
    tick: float = 1.0
    member_ttl: float | None = None
    join_grace: float = 3.0
    max_handoffs: int = 8
    handoff_timeout: float = 10.0
    read_count: int = 200
    max_inflight: int = 5000
    ask_timeout: float = 30.0
    dedup_window: float = 86_400.0
    max_deliveries: int = 5
    max_payload: int = 1_048_576

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            url = self.url  # never the password in the message
            got = repr(redact_url(url)) if isinstance(url, str) else type(url).__name__
            msg = f"url must be a redis://, rediss:// or unix:// URL, got {got}"
            raise ValueError(msg)
        if not isinstance(self.namespace, str) or not _NAMESPACE.fullmatch(self.namespace):
            msg = f"namespace must be 1-64 of [A-Za-z0-9_.-], got {self.namespace!r}"
            raise ValueError(msg)
        if self.role not in ("node", "sender"):
            msg = f"role must be 'node' or 'sender', got {self.role!r}"
            raise ValueError(msg)
        for name in (
            "n_shards",
            "max_handoffs",
            "read_count",
            "max_inflight",
            "max_payload",
            "max_deliveries",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be an int >= 1, got {value!r}"
                raise ValueError(msg)
        for name in (
            "lease_ttl",
            "tick",
            "member_ttl",
            "join_grace",
            "handoff_timeout",
            "ask_timeout",
            "dedup_window",
        ):
            value = getattr(self, name)
            if value is None and name == "member_ttl":
                continue  # derived from lease_ttl
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"{name} must be a number of seconds, got {value!r}"
                raise TypeError(msg)
            if not (0 <= value < math.inf) or (name != "join_grace" and value == 0):
                msg = f"{name} must be a finite number of seconds > 0, got {value!r}"
                raise ValueError(msg)
        if self.tick * 2 >= self.lease_ttl:
            msg = f"tick ({self.tick}) must be less than half of lease_ttl ({self.lease_ttl})"
            raise ValueError(msg)
        member = self.member_ttl
        if member is not None and member > self.lease_ttl:
            msg = (
                f"member_ttl ({member}) must not be more than lease_ttl ({self.lease_ttl}): "
                "a dead node's shards would wait for its membership to expire, not its leases"
            )
            raise ValueError(msg)
        if member is not None and member <= self.tick:
            msg = (
                f"member_ttl ({member}) must be more than tick ({self.tick}): a live node "
                "would count as gone between its heartbeats"
            )
            raise ValueError(msg)

    @property
    def effective_member_ttl(self) -> float:
        """`member_ttl`, or half of `lease_ttl` when it is None (more than `tick`, since
        `tick` is less than half of `lease_ttl`)."""
        return self.lease_ttl / 2 if self.member_ttl is None else self.member_ttl

    def __repr__(self) -> str:
        # Never the password: the URL's credentials are masked.
        url = redact_url(self.url)
        return (
            f"RedisCluster({url!r}, namespace={self.namespace!r}, n_shards={self.n_shards}, "
            f"role={self.role!r})"
        )


_QUERY_SECRET: Final = re.compile(r"(?i)([?&;]password=)[^&;#]*")


def redact_url(url: str) -> str:
    """`url` without its user name and password: `redis://***@host:6379/0`.

    The user information is everything up to the last `@` after the scheme (a
    password may hold an unencoded `@`, `/` or `?`), and a `password=` in the query
    (redis-py reads one there too) is masked as well. A string that is not a URL is
    masked the same way, from its start.
    """
    url = _QUERY_SECRET.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


def check_cluster(cluster: Any, store: Any) -> RedisCluster | None:
    """Validate `cluster` (a `RedisCluster` or None); a cluster keeps no local store."""
    if cluster is None:
        return None
    if not isinstance(cluster, RedisCluster):
        # The type only: a URL given here would put its password in the message.
        msg = f"cluster must be a supervisors.RedisCluster, got {type(cluster).__name__}"
        if isinstance(cluster, str):
            msg += " (give RedisCluster(url))"
        raise TypeError(msg)
    if store is not None:
        msg = "store= and cluster= cannot be combined: in cluster mode Redis keeps the messages"
        raise ValueError(msg)
    return cluster
