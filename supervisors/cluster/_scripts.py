"""The cluster's Lua scripts: every state-changing step of a shard, fenced by its lease.

A shard K has, under the namespace `ns` and the hash tag `{ns:K}` (so a shard's
keys share one Redis Cluster slot):

* `lease`: the owner's token `node|epoch`, with a TTL (`SET PX`);
* `epoch`: the fencing counter, incremented by every acquisition, never deleted;
* `q` and `qp`: the streams of the shard's messages of priority 0 and > 0, with
  the consumer group `rt` (a consumer per ownership: the token);
* `done`: msg_id -> commit time, the dedup window;
* `dlq` and `dlqx`: the shard's dead letters (by id) and their order, capped;
* `log`: ownership events (capped).

Every script that reads into the group, claims, acknowledges, replies or
dead-letters first checks `GET lease == token` and fails with `FENCED`
otherwise, so a paused process that lost its lease changes nothing (Kleppmann's
fencing tokens; the lease and the data are in one Redis, so the check is exact).
User keys are never part of a Redis key name: they travel inside entries.

Scripts are registered once per client (redis-py's `register_script`) and
called by digest (`EVALSHA`, loaded again after a server restart:
supervisors/cluster/_pipeline.py). Batches travel as one msgpack blob per call
(`cmsgpack.unpack` in Lua; the blob is packed without msgpack's bin type, which
the Lua library does not read), so that a call costs a few arguments whatever its
size; `unpack()` is given at most 1000 values at a time (Lua's limit is near 8000).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "CLAIM", "COMMIT", "DONE", "READ", "RELEASE", "RENEW", "SEND"]

#: KEYS: lease, epoch, log, q, qp. ARGV: node, ttl_ms.
#: Take a free lease: a new epoch, the token `node|epoch`; the consumer group is
#: created with the streams if needed. Returns the token, or false if the lease is held.
ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
for _, stream in ipairs({KEYS[4], KEYS[5]}) do
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', stream, 'rt', '0', 'MKSTREAM')
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'ev', 'acquire', 'token', token)
return token
"""

#: KEYS: the leases. ARGV: ttl_ms, then one token per lease.
#: Extend every lease still held by its token; returns 1 (renewed) or 0 per lease.
RENEW: Final = """
local out = {}
for i, lease in ipairs(KEYS) do
  if redis.call('GET', lease) == ARGV[i + 1] then
    redis.call('PEXPIRE', lease, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS: lease, log. ARGV: token. Give the lease up (after a drain); 1 if it was held.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'ev', 'release', 'token', ARGV[1])
return 1
"""

#: KEYS: lease, qp, q. ARGV: token, count, id_qp, id_q ('>' for new entries, '0' for
#: this consumer's own pending ones). A fenced XREADGROUP (non-blocking: BLOCK is
#: refused in scripts; the node waits with a plain XREAD, which changes nothing).
READ: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
return redis.call('XREADGROUP', 'GROUP', 'rt', ARGV[1], 'COUNT', ARGV[2],
  'STREAMS', KEYS[2], KEYS[3], ARGV[3], ARGV[4])
"""

#: KEYS: lease, stream. ARGV: token, cursor, count. Move pending entries of earlier
#: owners into this owner's consumer (ids only); returns [next_cursor, ids].
CLAIM: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local r = redis.call('XAUTOCLAIM', KEYS[2], 'rt', ARGV[1], 0, ARGV[2], 'COUNT', ARGV[3], 'JUSTID')
return {r[1], r[2]}
"""

#: KEYS: qp, q of one shard. ARGV: a blob, the array of the entries to append, in order,
#: each [lane (1: qp, 2: q), field, value, field, value...]. The sender's batch for the
#: shard, written atomically (a restart cuts a pipeline between shards, never inside one).
SEND: Final = """
local entries = cmsgpack.unpack(ARGV[1])
for _, entry in ipairs(entries) do
  redis.call('XADD', KEYS[entry[1]], '*', unpack(entry, 2))
end
return #entries
"""

#: KEYS: done. ARGV: the oldest mark still in the window (ms), a blob: the msg_ids to
#: look up. Returns 1 (committed within the window: a duplicate) or 0 per msg_id.
DONE: Final = """
local ids = cmsgpack.unpack(ARGV[2])
local oldest = tonumber(ARGV[1])
local out = {}
for i = 1, #ids, 1000 do
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j, score in ipairs(scores) do
    out[i + j - 1] = (score and tonumber(score) >= oldest) and 1 or 0
  end
end
return out
"""

#: KEYS: lease, qp, q, done, dlq (hash: letter id -> payload), dlqx (zset: letter id ->
#: time), then the reply lists. ARGV: token, now_ms, dedup window ms, dead letters kept,
#: and a blob [qp ids, q ids, msg_ids, replies, letters]: the entries to acknowledge per
#: stream, the msg_ids to remember, [index into KEYS, payload] per ask's reply,
#: [letter id, payload] per dead letter. Atomically: the dedup marks (the ones past the
#: window go), the replies, the dead letters (the oldest past the limit go), then the
#: acknowledgements, and the entries are deleted (acked entries are never read again:
#: the streams stay as long as the backlog). A crash can therefore never acknowledge
#: an ask without its reply.
COMMIT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local now = tonumber(ARGV[2])
local b = cmsgpack.unpack(ARGV[5])
local function chunks(list, call)
  for i = 1, #list, 1000 do call(unpack(list, i, math.min(i + 999, #list))) end
end
if #b[3] > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]))
  local marks = {}
  for i, msg_id in ipairs(b[3]) do
    marks[2 * i - 1] = now
    marks[2 * i] = msg_id
  end
  chunks(marks, function(...) redis.call('ZADD', KEYS[4], ...) end)
end
for _, reply in ipairs(b[4]) do
  redis.call('LPUSH', KEYS[reply[1]], reply[2])
  redis.call('PEXPIRE', KEYS[reply[1]], 60000)
end
if #b[5] > 0 then
  for _, letter in ipairs(b[5]) do
    redis.call('HSET', KEYS[5], letter[1], letter[2])
    redis.call('ZADD', KEYS[6], now, letter[1])
  end
  local over = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[4])
  if over > 0 then
    local old = redis.call('ZRANGE', KEYS[6], 0, over - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, over - 1)
    chunks(old, function(...) redis.call('HDEL', KEYS[5], ...) end)
  end
end
for s = 1, 2 do
  local stream = KEYS[s + 1]
  chunks(b[s], function(...)
    redis.call('XACK', stream, 'rt', ...)
    redis.call('XDEL', stream, ...)
  end)
end
return #b[1] + #b[2]
"""
