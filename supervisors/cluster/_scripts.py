"""The cluster's Lua scripts: every state-changing step of a shard, fenced by its lease.

A shard K has, under the namespace `ns` and the hash tag `{ns:K}` (so a shard's
keys share one Redis Cluster slot):

* `lease`: the owner's token `node|epoch`, with a TTL (`SET PX`);
* `epoch`: the fencing counter, incremented by every acquisition, never deleted;
* `q` and `qp`: the streams of the shard's messages of priority 0 and > 0, with
  the current owner's consumer group, named by its token (one consumer, the same);
  an entry stays in its stream until it is committed;
* `tries`: `lane:id` -> how often earlier owners delivered an entry still in a
  stream (the delivery counts of their groups, kept when the groups go);
* `done`: msg_id -> commit time, the dedup window;
* `dlq` and `dlqx`: the shard's dead letters (by id) and their order, capped;
* `log`: ownership events (capped).

Every script that acknowledges, replies or dead-letters first checks `GET lease
== token` and fails with `FENCED` otherwise, so a paused process that lost its
lease changes nothing (Kleppmann's fencing tokens; the lease and the data are in
one Redis, so the check is exact). Reads are plain `XREADGROUP`s into the owner's
own group, outside any script (a script's reply is converted to Lua and back: that
doubled the server's cost of a read); they are fenced by the group itself, which
the next owner's `ACQUIRE` destroys, so a stale owner's read fails with `NOGROUP`.
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

__all__ = ["ACQUIRE", "COMMIT", "DONE", "RELEASE", "RENEW", "SEND"]

#: KEYS: lease, epoch, log, q, qp, tries. ARGV: node, ttl_ms.
#: Take a free lease: a new epoch, the token `node|epoch`, and the owner's consumer
#: group on each stream, named by the token and created at the start (so the owner
#: reads every entry still in the stream, in order: those are exactly the ones not
#: committed). The groups of earlier owners are destroyed, which fences their reads;
#: first what each had delivered without an acknowledgement is added to `tries`
#: (`lane:id` -> deliveries; lane 0: qp, 1: q), and the tries of entries no longer in
#: the streams go. Returns the token, or false if the lease is held.
ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
local streams = {KEYS[5], KEYS[4]}
for i, stream in ipairs(streams) do
  local lane = (i - 1) .. ':'
  if redis.call('EXISTS', stream) == 1 then
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name = group[2]
      local start = '-'
      while true do
        local rows = redis.call('XPENDING', stream, name, start, '+', 1000)
        for _, row in ipairs(rows) do
          redis.call('HINCRBY', KEYS[6], lane .. row[1], row[4])
        end
        if #rows < 1000 then break end
        start = '(' .. rows[#rows][1]
      end
      redis.call('XGROUP', 'DESTROY', stream, name)
    end
  end
  redis.call('XGROUP', 'CREATE', stream, token, '0', 'MKSTREAM')
end
for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
  local id = string.sub(field, 3)
  local stream = streams[tonumber(string.sub(field, 1, 1)) + 1]
  if #redis.call('XRANGE', stream, id, id) == 0 then redis.call('HDEL', KEYS[6], field) end
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
    redis.call('XACK', stream, ARGV[1], ...)
    redis.call('XDEL', stream, ...)
  end)
end
return #b[1] + #b[2]
"""
