"""Shard assignment, pure: which shard a key is in, which node should own a shard.

No I/O and no clock here (the cluster's decisions are tested on their own):

* `shard_of(key, n_shards)`: a stable hash of the key, the same in every process
  and every Python version (never the salted built-in `hash`). A str key and an
  int key of the same digits are different keys, as they are in one process.
  `ShardMap` is the same function with a bounded cache of recent keys: a chat's
  users send again soon, and the hash is a third of the sending path's own cost.
* `owner_of(shard, members)`: rendezvous (highest random weight) hashing over
  the live members: every node computes the same owner from the same member
  list; when a node leaves only its shards move, when one joins about
  1/(n+1) of them move to it.
* `plan(node, members, owned, n_shards, ...)`: what one node does on a tick:
  the free shards it should acquire and the shards it should hand off, with a
  join grace and a bound on concurrent handoffs (damping, as Akka's rebalance
  threshold does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = ["ShardMap", "TickPlan", "owner_of", "plan", "shard_of"]


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_bytes(key: str | int) -> bytes:
    """The bytes a key hashes as: tagged, so that "42" and 42 differ."""
    if type(key) is str:
        return b"s" + key.encode("utf-8", "surrogatepass")
    return b"i" + str(key).encode("ascii")


def shard_of(key: str | int, n_shards: int) -> int:
    """The shard of `key`, in 0..n_shards-1."""
    return _digest(key_bytes(key)) % n_shards


@final
class ShardMap:
    """`shard_of` for one shard count, with the shards of up to `limit` recent keys kept.

    The cache is emptied when full (cheaper than keeping an order, and a chat's active
    users fill it again at once). Keys are str or int (validated at the call site), so
    a str and an int of the same digits stay apart, as they do in `shard_of`.
    """

    __slots__ = ("_cache", "limit", "n_shards")

    def __init__(self, n_shards: int, limit: int = 65_536) -> None:
        self.n_shards = n_shards
        self.limit = limit
        self._cache: dict[str | int, int] = {}

    def __call__(self, key: str | int) -> int:
        """The shard of `key`, in 0..n_shards-1."""
        cache = self._cache
        shard = cache.get(key)
        if shard is None:
            shard = _digest(key_bytes(key)) % self.n_shards
            if len(cache) >= self.limit:
                cache.clear()
            cache[key] = shard
        return shard


def owner_of(shard: int, members: Iterable[str]) -> str | None:
    """The member that should own `shard` (rendezvous hashing); None if there is none."""
    best: str | None = None
    best_weight = -1
    for member in members:
        weight = _digest(b"%d|%s" % (shard, member.encode()))
        if weight > best_weight or (weight == best_weight and best is not None and member < best):
            best, best_weight = member, weight
    return best


@final
@dataclass(frozen=True, slots=True)
class TickPlan:
    """What a node does on one membership tick."""

    acquire: tuple[int, ...]
    """Shards it should own and does not: try to take their (free) leases."""
    hand_off: tuple[int, ...]
    """Shards it owns that another live node should own: drain, then release them."""


def plan(
    node: str,
    members: Collection[str],
    owned: Collection[int],
    n_shards: int,
    *,
    joining: bool = False,
    handing_off: int = 0,
    max_handoffs: int = 8,
) -> TickPlan:
    """The acquisitions and handoffs of `node` given the live `members`.

    `joining`: the node is within its join grace and takes nothing yet. A shard
    is handed off only to a live member (`members` are the live ones; `node`
    counts as live). At most `max_handoffs` handoffs run at once (`handing_off`
    are running already).
    """
    live = sorted(set(members) | {node})
    acquire: list[int] = []
    hand_off: list[int] = []
    for shard in range(n_shards):
        owner = owner_of(shard, live)
        if shard in owned:
            if owner != node:
                hand_off.append(shard)
        elif owner == node and not joining:
            acquire.append(shard)
    room = max(0, max_handoffs - handing_off)
    return TickPlan(tuple(acquire), tuple(hand_off[:room]))
