"""inorder's cluster mode: one runtime per process, many processes, one Redis.

What happens when, for `Runtime(Bot, cluster=RedisCluster(url))`:

* **construction**: `RedisCluster` (`_options.py`) checks every setting (G9); nothing
  connects yet, and importing this package needs no Redis client.
* **start**: the node (`_node.py`) connects with redis-py's asyncio client (the
  `inorder[redis]` extra), checks the namespace, loads the fenced Lua scripts
  (`_scripts.py`) and starts its tasks; the facade sends through a port
  (`_port.py`) instead of the local router.
* **every tick**: membership, lease renewal and the shard plan (`_leases.py`, with
  rendezvous hashing of keys to shards and shards to nodes in `_shards.py`); a shard
  another node should own is handed off after its local messages drain.
* **taking a shard over and reading**: the acquisition (`_leases.py`, the `ACQUIRE`
  script) gives the owner a consumer group of its own at the start of the streams and
  destroys the earlier owners' groups, keeping their delivery counts; `_reader.py`
  reads, redelivers first what an earlier owner left uncommitted, in stream order, and
  hands each entry to the key's local actor.
* **outcomes**: `_commits.py` writes each shard's batch (dedup mark, reply, dead
  letter, acknowledgement) in one script that checks the lease's fencing token; a
  refused commit drops the shard at once (G12).
* **Redis unreachable**: every loop backs off with the pure schedule of
  `_backoff.py` and logs the 1st, 2nd, 4th... failure and the recovery.

`_state.py` holds what these parts share: the node's state, shards, items and
replies. Users import `RedisCluster` from `supervisors`.

**Inspection**: every node publishes a summary of its figures every few seconds
(`_summary.py`); `ClusterInspector` (`_inspect.py`) reads those, the shards'
leases, lag and dead letters straight from Redis, and redelivers or purges dead
letters, with no node of its own (the command line's `status --redis`).
"""

from supervisors.cluster._inspect import ClusterInspector
from supervisors.cluster._options import RedisCluster

__all__ = ["ClusterInspector", "RedisCluster"]
