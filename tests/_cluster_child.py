"""A child process of tests/test_cluster_chaos.py: one cluster node, or the producer.

Run as a script, never imported by the suite:

    python -P _cluster_child.py PACKAGE_DIR ROLE SETTINGS_JSON SIGNAL_FD

`PACKAGE_DIR` is the directory the parent test imported `actors` from (the
source tree or the compiled copy), so that parent and children run the same
build. `ROLE` is "node" or "producer"; `SETTINGS_JSON` holds the Redis URL, the
`RedisCluster` options, the output directory and the workload. Lines the parent
waits for are written to the pipe `SIGNAL_FD`.

**node**: a `Runtime(Bot, cluster=RedisCluster(...))`. Its handler appends one
line per handling to `<out>/<name>.handled` with a single `os.write` on an
`O_APPEND` descriptor, before its first await: the line is in the kernel as soon
as the handler runs, so it survives SIGKILL, and SIGSTOP cannot reorder it
against the handling itself::

    H wall_time key n copy kind attempt redelivered epoch msg_id name hid start

`epoch` is `ctx.epoch`, the fencing epoch under which the node runs the message
(`-` if None), and `msg_id` is `ctx.message_id` (`-` if None). `hid` names the
handling (`name.count`), and `start` is when the runtime let it start: the
`time.monotonic()` of the take that passed the node's fence check (the cell's
start time), a clock that every process of the machine shares (CLOCK_MONOTONIC).
When the handler ends (returns, raises or is cancelled), a second line::

    E hid end

with `end` on the same clock. A handler sleeps `handler_ms[(n + k) % 5]`
milliseconds, `k` from the key (the sum of its characters), so that the users, who
take turns, do not all have their slow message at once; it answers an ask with
`n`. SIGTERM stops the runtime gracefully (`await rt.stop()`); the child then
writes `rt.stats()` to `<out>/<name>.stats.json`, with
`task_errors`: the node's background tasks that had ended with an exception
before the stop (a loop that died). It exits 0. Signals: `ready NODE_ID`, then
`stopped`.

**producer**: a `role="sender"` runtime. One task per user sends messages
1..N in order; message n of the u-th of U users is due at start + (n + u/U) x
seconds/N (the users take turns). A message is `["m", n, 0]`, sent with
`await rt.send`, or (a seeded `ask_fraction` of them) `["a", n, 0]` as an ask,
not awaited before the next message (its outcome is collected at the end). A
seeded `msg_id_fraction` carry the msg_id `u.n`; a seeded `dup_fraction` of
those are sent again 0 to 4 messages later with the same msg_id as
`["m", n, 1]` (a producer duplicate: it must never be handled). A send that
fails is retried with the same msg_id before the user's next message (one
without a msg_id is not retried); either way the failure is recorded. What
happened goes to `<out>/producer.log`, one line per fact::

    D key n               a duplicate of n was sent
    F key n error         a send failed (retried if it has a msg_id)
    A key n ok value      an ask was answered
    A key n err type msg  an ask failed

Signals: `ready`, `progress SENT`, `done`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    package_dir, role, settings_json, signal_fd = argv[1], argv[2], argv[3], int(argv[4])
    sys.path.insert(0, package_dir)
    settings = json.loads(settings_json)
    parent = os.getppid()

    def tell_parent(line: str) -> None:
        os.write(signal_fd, (line + "\n").encode())

    async def orphan_guard() -> None:
        """A child whose test went away (or hangs) must not outlive it for long."""
        deadline = time.monotonic() + settings["max_life"]
        while os.getppid() == parent and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        os._exit(3)

    async def run() -> None:
        guard = asyncio.get_running_loop().create_task(orphan_guard())
        try:
            if role == "node":
                await run_node(settings, tell_parent)
            else:
                await run_producer(settings, tell_parent)
        finally:
            guard.cancel()

    asyncio.run(run())
    return 0


def cluster_config(settings: dict[str, Any], role: Any) -> Any:
    from supervisors import RedisCluster

    return RedisCluster(settings["url"], role=role, **settings["cluster"])


async def run_node(settings: dict[str, Any], tell_parent: Any) -> None:
    from actors import Context, UserActor
    from supervisors import Runtime

    name = settings["name"]
    out = settings["out"]
    handled = os.open(
        os.path.join(out, f"{name}.handled"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )

    seconds = [ms / 1000 for ms in settings["handler_ms"]]
    count = 0

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            nonlocal count
            kind, n, copy = message
            count += 1
            hid = f"{name}.{count}"
            # The start is the take's, right after the fence check: a pause that lands
            # between the two (before this line) does not make the handler a later one.
            start = getattr(ctx._cell, "_started", None) or time.monotonic()
            os.write(
                handled,
                (
                    f"H {time.time():.6f} {ctx.key} {n} {copy} {kind} {ctx.attempt} "
                    f"{int(ctx.redelivered)} {ctx.epoch if ctx.epoch is not None else '-'} "
                    f"{ctx.message_id or '-'} {name} {hid} {start:.6f}\n"
                ).encode(),
            )
            try:
                # A handler takes a few ms (a chat bot's call elsewhere): at any instant
                # some are running and some wait behind them, read but not committed.
                shift = sum(map(ord, str(ctx.key)))
                await asyncio.sleep(seconds[(n + shift) % len(seconds)])
            finally:
                os.write(handled, f"E {hid} {time.monotonic():.6f}\n".encode())
            return n

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    rt = Runtime(Bot, cluster=cluster_config(settings, "node"), idle_timeout=5.0)
    await rt.start()
    tell_parent(f"ready {rt.stats()['cluster']['node']}")
    await stopping.wait()
    # A background task of the node (reader, commits, ticks...) that ended on an error
    # before the stop: the node is broken, whatever the checks find next.
    task_errors = [
        f"{getattr(task.get_coro(), '__qualname__', '?')}: {task.exception()!r} {task.exception()}"
        for task in rt._node._tasks  # type: ignore[union-attr]
        if task.done() and not task.cancelled() and task.exception() is not None
    ]
    began = time.monotonic()
    summary = await rt.stop(timeout=settings["stop_timeout"])
    stats = rt.stats()
    stats["task_errors"] = task_errors
    stats["stop_seconds"] = time.monotonic() - began
    stats["summary"] = repr(summary)
    path = os.path.join(out, f"{name}.stats.json")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, json.dumps(stats, default=repr).encode())
    os.close(fd)
    os.replace(path + ".tmp", path)
    os.close(handled)
    tell_parent("stopped")


async def run_producer(settings: dict[str, Any], tell_parent: Any) -> None:
    from actors import Context, UserActor
    from supervisors import Runtime

    class Idle(UserActor):
        """A sender runs no actors: never called."""

        def on_message(self, message: Any, ctx: Context) -> None:
            raise AssertionError("a sender-only process ran a handler")

    work = settings["producer"]
    rng = random.Random(work["seed"])
    users = [f"u{i}" for i in range(work["users"])]
    total = work["messages"]
    # Message n of user u is due at start + (n + u / users) * interval: the users take
    # turns, evenly spread, rather than all sending at once.
    interval = work["seconds"] / total
    log = os.open(
        os.path.join(settings["out"], "producer.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )

    def fact(*fields: object) -> None:
        os.write(log, (" ".join(str(f) for f in fields) + "\n").encode())

    # The plan of every user, drawn up front from the seed: (n, kind, msg_id, dup_after).
    plans: dict[str, list[tuple[int, str, str | None, int | None]]] = {}
    for user in users:
        plan = []
        for n in range(1, total + 1):
            kind = "a" if rng.random() < work["ask_fraction"] else "m"
            with_id = work["msg_id_fraction"] >= 1 or rng.random() < work["msg_id_fraction"]
            msg_id = f"{user}.{n}" if with_id else None
            dup_after = None
            if msg_id is not None and kind == "m" and rng.random() < work["dup_fraction"]:
                dup_after = rng.randint(0, 4)  # resent after this many more messages
            plan.append((n, kind, msg_id, dup_after))
        plans[user] = plan

    rt = Runtime(Idle, cluster=cluster_config(settings, "sender"))
    await rt.start()
    asks: list[tuple[str, int, Any]] = []
    sent = 0

    async def send(user: str, message: list[Any], msg_id: str | None) -> None:
        for _ in range(200):
            try:
                await rt.send(user, message, msg_id=msg_id)
            except Exception as exc:  # Redis restarting: retry with the same msg_id
                fact("F", user, message[1], type(exc).__name__)
                if msg_id is None:
                    return
                await asyncio.sleep(0.05)
            else:
                return
        fact("F", user, message[1], "gave-up")

    async def produce(user: str, start: float) -> None:
        nonlocal sent
        later: dict[int, list[tuple[int, str]]] = {}  # due at n -> duplicates to send
        phase = users.index(user) / len(users)
        for n, kind, msg_id, dup_after in plans[user]:
            delay = start + (n + phase) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "a":
                asks.append((user, n, rt.ask(user, ["a", n, 0], msg_id=msg_id)))
            else:
                await send(user, ["m", n, 0], msg_id)
            if dup_after is not None:
                later.setdefault(n + dup_after, []).append((n, msg_id))  # type: ignore[arg-type]
            for original, original_id in later.pop(n, []):
                await send(user, ["m", original, 1], original_id)
                fact("D", user, original)
            sent += 1
        for due in sorted(later):
            for original, original_id in later[due]:
                await send(user, ["m", original, 1], original_id)
                fact("D", user, original)

    async def report() -> None:
        while True:
            await asyncio.sleep(0.1)
            tell_parent(f"progress {sent}")

    tell_parent("ready")
    reporter = asyncio.get_running_loop().create_task(report())
    start = time.monotonic()
    await asyncio.gather(*(produce(user, start) for user in users))
    for user, n, future in asks:
        try:
            value = await future
        except Exception as exc:
            text = str(exc).replace("\n", " ") or "-"
            fact("A", user, n, "err", type(exc).__name__, text)
        else:
            fact("A", user, n, "ok", value)
    reporter.cancel()
    await rt.stop()
    os.close(log)
    tell_parent(f"progress {sent}")
    tell_parent("done")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
