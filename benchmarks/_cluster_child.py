"""One process of the ``cluster`` scenario: a runtime node or a worker of a Redis peer.

``python -P -m benchmarks._cluster_child '<json spec>'`` (``benchmarks._cluster``
starts it with the parent's import path) runs one of:

* ``node``: ``Runtime(Counter, cluster=RedisCluster(url, ...))``, whose actor records
  every message it handles;
* ``list-lock`` and ``setnx-dedup``: a worker of one of the two peers of
  :mod:`benchmarks._redis_peers`, in a plain loop on a synchronous redis-py client.

Every handled message is recorded as ``(user, seq, time.monotonic())`` (a
system-wide clock on Linux, so the parent can merge the records of several
processes by time and count order violations). The records are kept in memory and
appended to the spec's ``trace`` file when the process stops; after the command
``sync`` every record is written through at once (``os.write``), so that a process
killed with SIGKILL leaves every message it handled in its file.

The protocol, one line at a time. On stdout, every ``STATUS_EVERY`` seconds and
after every command: ``STATUS {json}`` with ``n`` (messages handled), ``t`` (when the
last one was), ``cpu`` (the process's CPU seconds), ``compiled``, and for a node its
``node`` id and ``owned`` shards. On stdin: ``sync``, ``profile`` (start cProfile;
the stats go to the spec's ``profile`` path at ``stop``), ``stop`` (stop gracefully,
write the trace, exit). End of input means ``stop``: a child never outlives its parent's
pipe.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import cProfile
import json
import os
import struct
import sys
import threading
import time
from typing import Any

STATUS = "STATUS "
STATUS_EVERY = 0.025
#: One trace record: user, seq, time (time.monotonic()).
RECORD = struct.Struct("<qqd")


class Trace:
    """The messages this process handled, in handling order."""

    def __init__(self, path: str) -> None:
        self.users = array.array("q")
        self.seqs = array.array("q")
        self.times = array.array("d")
        self.last = 0.0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = 0
        self._through = False
        self.record = self._buffered

    def _buffered(self, user: int, seq: int) -> None:
        t = time.monotonic()
        self.users.append(user)
        self.seqs.append(seq)
        self.times.append(t)
        self.last = t

    def _written_through(self, user: int, seq: int) -> None:
        self._buffered(user, seq)
        self.flush()

    def write_through(self) -> None:
        """From now on every record reaches the file at once (a SIGKILL loses none)."""
        self.flush()
        self._through = True
        self.record = self._written_through

    @property
    def count(self) -> int:
        return len(self.times)

    def flush(self) -> None:
        n = len(self.times)
        if n == self._written:
            return
        pack, users, seqs, times = RECORD.pack, self.users, self.seqs, self.times
        data = b"".join([pack(users[i], seqs[i], times[i]) for i in range(self._written, n)])
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written = n

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def read_trace(path: str) -> list[tuple[int, int, float]]:
    """The records of a trace file: ``[(user, seq, time), ...]`` in handling order."""
    with open(path, "rb") as f:
        data = f.read()
    whole = len(data) - len(data) % RECORD.size  # a SIGKILL cannot cut one record short
    return list(RECORD.iter_unpack(data[:whole]))


def _compiled() -> bool:
    try:
        import actors

        return bool(actors.COMPILED)
    except Exception:
        return False


class Control:
    """Reads commands from stdin on a thread of its own; prints status lines."""

    def __init__(self, trace: Trace, spec: dict[str, Any]) -> None:
        self.trace = trace
        self.spec = spec
        self.stopping = threading.Event()
        self.extra: dict[str, Any] = {}
        self.profiler: cProfile.Profile | None = None
        self._lock = threading.Lock()
        self._compiled = _compiled()

    def status(self) -> None:
        payload = {
            "n": self.trace.count,
            "t": self.trace.last,
            "cpu": time.process_time(),
            "compiled": self._compiled,
            "pid": os.getpid(),
            **self.extra,
        }
        line = STATUS + json.dumps(payload) + "\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def commands(self, on_command: Any) -> None:
        """Read stdin until ``stop`` or its end (thread)."""
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            on_command(command)
        self.stopping.set()

    def start_profile(self) -> None:
        if self.spec.get("profile") and self.profiler is None:
            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def save_profile(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.spec["profile"])
            self.profiler = None


# -- the runtime node -------------------------------------------------------------------


def ownership(rt: Any) -> dict[str, Any]:
    """The node's id and the shards it owns, 40 times a second.

    `Runtime.stats()["cluster"]` says the same, but `stats()` computes every figure of
    the runtime (latency percentiles over the ring included): a few milliseconds with
    the pure build, too much to call this often inside a measurement. So the node's own
    fields are read when they are there (a private detail: the fallback is `stats()`).
    """
    node = getattr(rt, "_node", None)
    owned, node_id = getattr(node, "owned", None), getattr(node, "node_id", None)
    if isinstance(owned, dict) and isinstance(node_id, str):
        return {"node": node_id, "owned": sorted(owned)}
    cluster = rt.stats()["cluster"]
    return {"node": cluster["node"], "owned": cluster["shards_owned"]}


async def run_node(spec: dict[str, Any]) -> None:
    from actors import UserActor
    from supervisors import RedisCluster, Runtime

    trace = Trace(spec["trace"])
    control = Control(trace, spec)

    class Counter(UserActor):
        """Records the message: the trivial handler of the benchmark."""

        async def on_message(self, message: Any, ctx: Any) -> None:
            trace.record(self.key, message)  # type: ignore[arg-type]  # int keys here

    loop = asyncio.get_running_loop()
    rt = Runtime(Counter, cluster=RedisCluster(spec["url"], **spec["cluster"]), idle_timeout=None)
    await rt.start()
    stopped = asyncio.Event()

    def on_command(command: str) -> None:
        if command == "sync":
            loop.call_soon_threadsafe(trace.write_through)
        elif command == "profile":
            loop.call_soon_threadsafe(control.start_profile)
        loop.call_soon_threadsafe(report)

    def report() -> None:
        control.extra = ownership(rt)
        control.status()

    def commands() -> None:
        control.commands(on_command)
        loop.call_soon_threadsafe(stopped.set)

    threading.Thread(target=commands, daemon=True).start()
    try:
        while not stopped.is_set():
            report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), STATUS_EVERY)
    finally:
        control.save_profile()
        await rt.stop(timeout=10.0)
        trace.close()
        report()


# -- the peers' workers -----------------------------------------------------------------


def run_worker(spec: dict[str, Any]) -> None:
    from benchmarks._redis_peers import WORKERS

    trace = Trace(spec["trace"])
    control = Control(trace, spec)
    worker = WORKERS[spec["role"]](spec["url"], trace, spec["lock_ms"])

    def on_command(command: str) -> None:
        if command == "sync":
            worker.call(trace.write_through)
        elif command == "profile":
            worker.call(control.start_profile)
        worker.call(control.status)

    def status_loop() -> None:
        while not control.stopping.wait(STATUS_EVERY):
            control.extra = worker.counts()
            control.status()

    threading.Thread(target=control.commands, args=(on_command,), daemon=True).start()
    threading.Thread(target=status_loop, daemon=True).start()
    try:
        worker.run(control.stopping)
    finally:
        control.save_profile()
        trace.close()
        control.extra = worker.counts()
        control.status()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    if spec["role"] == "node":
        asyncio.run(run_node(spec))
    else:
        run_worker(spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
