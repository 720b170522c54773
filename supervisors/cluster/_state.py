"""The state a cluster node keeps, shared by its parts (supervisors/cluster/_node.py).

`NodeState` holds what the node's parts read and write: the shards it owns, the
messages in flight, the queues of the outbox and of the commits, the counters.
The parts are mixins over it: `Leases` (membership, leases, handoffs),
`Reader` (takeover, reads, dispatch), `Commits` (outcomes, fenced commits,
replies), and `ClusterNode` itself (connection, sending, asks).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from actors._errors import CodecError, Dropped, Interrupted, RecordedError
from actors._outcomes import DeadLetter
from supervisors.cluster._shards import ShardMap
from supervisors.cluster._summary import SummaryPublisher

if TYPE_CHECKING:
    from actors._future import LoopFuture
    from actors.journal._codec import Codec
    from supervisors._core import _Core
    from supervisors.cluster._options import RedisCluster

__all__ = [
    "Entry",
    "Item",
    "NodeState",
    "RemoteReply",
    "Shard",
    "entries_of",
    "error_of",
    "letter_of",
    "pack",
]


def pack(value: Any) -> bytes:
    """A script's blob: msgpack without the bin type, which Lua's cmsgpack cannot read
    (bytes go as msgpack str; Lua strings are bytes either way)."""
    blob: bytes = msgpack.packb(value, use_bin_type=False)
    return blob


@dataclass(slots=True)
class Shard:
    index: int
    token: str
    phase: str = "replay"  # replay -> read -> drain
    inflight: int = 0
    last_q: bytes = b"0-0"
    last_qp: bytes = b"0-0"
    drain_since: float = 0.0
    resync: bool = False  # a read's answer was lost: re-read this owner's consumer
    # At a takeover: (lane, id) -> deliveries by earlier owners, of the entries they
    # left uncommitted (Redis's `tries`); emptied as the entries are read again.
    tries: dict[tuple[int, bytes], int] = field(default_factory=dict)
    firsts: set[tuple[Any, int]] = field(default_factory=set)  # (key, lane) replayed


@dataclass(slots=True)
class Item:
    shard: Shard
    stream: int  # 0: qp, 1: q
    entry: bytes
    msg_id: str
    reply_key: str
    corr: str
    reply: RemoteReply | None = None
    dead: bytes = b""
    dead_id: str = ""
    key: str | int = ""  # the message's key, once decoded


class RemoteReply:
    """Stands in for the ask future of a caller in another process (or this one)."""

    __slots__ = ("_cell", "done", "error", "value")

    def __init__(self) -> None:
        self._cell: Any = None
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        if not self.done:
            self.done, self.value = True, value

    def set_exception(self, exc_info: Any = None) -> None:
        if not self.done:
            self.done = True
            self.error = exc_info[1] if isinstance(exc_info, tuple) else exc_info


class NodeState:
    """What every part of a node reads and writes (one event loop: no locks)."""

    # The scripts, registered once per client (supervisors/cluster/_scripts.py).
    _acquire: Any
    _renew: Any
    _release: Any
    _commit: Any
    _send: Any
    _done: Any

    def __init__(
        self, config: RedisCluster, codec: Codec, loop: asyncio.AbstractEventLoop, log: Any
    ) -> None:
        self.config = config
        self.codec = codec
        self.loop = loop
        self.log = log
        self.node_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ns = config.namespace
        self.ns = ns
        self.reply_key = f"{ns}:reply:{self.node_id}"
        self.members_key = f"{ns}:members"
        self.shard_of = ShardMap(config.n_shards)
        self.summaries = SummaryPublisher(ns, self.node_id, config.tick)  # for the inspector
        self.owned: dict[int, Shard] = {}
        self.inflight: dict[int, Item] = {}
        # msg_ids read and not yet committed, with the item that has each: a copy read
        # meanwhile is a duplicate too (the `done` set in Redis only has the committed
        # ones), as long as that item's shard is still held under its epoch (`_live`).
        self._live_ids: dict[str, Item] = {}
        self._seq = 0
        # (shard, SEND entry, send's waiter), or (-1, a dead letter to forget, None)
        self._outbox: list[tuple[int, Any, asyncio.Future[None] | None]] = []
        self._commits: list[Item] = []
        self._asks: dict[str, tuple[LoopFuture[Any], Any, asyncio.TimerHandle]] = {}
        self._wake_outbox = asyncio.Event()
        self._wake_commits = asyncio.Event()
        self._wake_reader = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._stopping = False  # stop() began: hand off, acquire nothing
        self.dead_letter_limit = 10_000  # kept per shard in Redis (the runtime's limit)
        self._known_letters: set[str] = set()  # dead letters of Redis retained here
        self._flushing: list[Item] = []  # the commit batch being written now
        self._started_at = 0.0
        self._last_renew = 0.0
        self.core: _Core | None = None
        self.client: Any = None
        self.counts = dict.fromkeys(
            (
                "sent",
                "acquired",
                "released",
                "takeovers",
                "fenced",
                "replayed",
                "lost",
                "duplicates",
            ),
            0,
        )
        self.lag: dict[int, int] = {}

    def key(self, shard: int, name: str) -> str:
        """The Redis key `name` of `shard`: its keys share the hash tag `{ns:shard}`."""
        return f"{self.ns}:{{{self.ns}:{shard}}}:{name}"

    def _live(self, msg_id: str) -> bool:
        """Whether `msg_id` is in flight here under an epoch this node still holds. One of
        a lost epoch is not: it will never commit, and what of it still waits here will
        not run (`Commits.started`), so a copy that the shard's new epoch reads must run."""
        item = self._live_ids.get(msg_id)
        return item is not None and self.owned.get(item.shard.index) is item.shard

    def _forget_live(self, item: Item) -> None:
        """`item` committed, or will not be: its msg_id is no longer in flight (unless a
        later item has it now)."""
        if item.msg_id and self._live_ids.get(item.msg_id) is item:
            del self._live_ids[item.msg_id]

    # Implemented by the parts; declared here so that each part can call the others.

    def _lose(self, shard: Shard, why: str) -> None:
        raise NotImplementedError

    async def _take_over(self, shard: Shard) -> None:
        raise NotImplementedError

    def _commit_now(self, item: Item, reason: str) -> None:
        raise NotImplementedError

    def _queue_commit(self, item: Item) -> None:
        raise NotImplementedError


#: A stream entry as the reader takes it: (id, envelope or None, flags, msg_id, trace
#: or None, reply list, correlation id); "" for a field the entry does not have.
Entry = tuple[bytes, bytes | None, bytes, str, bytes | None, str, str]


def entries_of(result: Any) -> list[list[Entry]]:
    """[qp entries, q entries] from an XREADGROUP reply over (qp, q), as the server sent it."""
    out: list[list[Entry]] = [[], []]
    # RESP3 (redis-py's default) answers a map of streams, RESP2 a list of pairs.
    streams = result.items() if isinstance(result, dict) else result or []
    for stream_name, rows in streams:
        taken = out[0 if stream_name.endswith(b":qp") else 1]
        for entry_id, fields in rows:
            if fields is None:  # deleted while pending
                continue
            # The common entries, as SEND writes them: the envelope alone (flags 0), or
            # the envelope and flags, and maybe a msg_id.
            if type(fields) is list and fields and fields[0] == b"e":
                n = len(fields)
                if n == 2:
                    taken.append((entry_id, fields[1], b"0", "", None, "", ""))
                    continue
                if n == 4 and fields[2] == b"f":
                    taken.append((entry_id, fields[1], fields[3], "", None, "", ""))
                    continue
                if n == 6 and fields[2] == b"f" and fields[4] == b"i":  # with a msg_id
                    msg_id = fields[5].decode()
                    taken.append((entry_id, fields[1], fields[3], msg_id, None, "", ""))
                    continue
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            taken.append(
                (
                    entry_id,
                    fields.get(b"e"),
                    fields.get(b"f", b"0"),
                    fields.get(b"i", b"").decode(),
                    fields.get(b"t"),
                    fields.get(b"r", b"").decode(),
                    fields.get(b"c", b"").decode(),
                )
            )
    return out


def error_of(key: Any, value: Any) -> BaseException:
    type_name, text, reason = value
    if type_name == "Dropped":
        return Dropped(key, reason or "dropped")
    if type_name == "Interrupted":
        return Interrupted(key, reason or "interrupted")
    return RecordedError(type_name, text)


def letter_of(codec: Codec, letter_id: str, payload: bytes) -> DeadLetter:
    """A dead letter kept in Redis, as `dead_letters()` lists it (its id: `journal_id`)."""
    try:
        record, reason, type_name, text = codec.loads(payload)
        envelope = codec.decode_envelope(record)
    except (CodecError, TypeError, ValueError) as exc:
        return DeadLetter("?", payload, "undecodable", exc, 0, 0, None, letter_id)
    recorded = RecordedError(type_name, text) if type_name else None
    if reason == "failed" and recorded is not None:
        error: BaseException = recorded
        cause: BaseException | None = recorded
    else:
        error, cause = Dropped(envelope.key, reason, recorded), recorded
    return DeadLetter(
        envelope.key,
        envelope.message,
        reason,
        error,
        envelope.priority,
        envelope.attempt,
        cause,
        letter_id,
    )
