"""The child process of tests/test_durable_crash.py: a durable runtime under load.

Run as a script, never imported by the suite:

    python -P _durable_child.py PACKAGE_DIR JOURNAL FACTS SIGNAL_FD RUN SEED MODE

`PACKAGE_DIR` is the directory the parent test imported `actors` from (the
source tree or the compiled copy), so that parent and child run the same build.
The child opens the runtime on the SQLite journal `JOURNAL` (which the previous
child of the chain may have left behind when it was killed), reports "running"
on the pipe `SIGNAL_FD`, and has several producer tasks send numbered messages
to eight keys. `MODE` "kill" sends until the parent kills the process with
SIGKILL; "final" sends a bounded amount (to every key), waits for quiescence,
stops cleanly, reports the `replayed` count and "done", and exits 0.

What happened is appended to `FACTS`, one line per fact, each with a single
`os.write` on an `O_APPEND` descriptor: the data is in the kernel as soon as the
call returns, so it survives a SIGKILL right after it. The lines (`key` is
`u0`..`u6`, or `7` for the one int key):

    I run key n                          about to send message n of key (intent)
    C run key n                          confirmed durable: the send closing its burst returned
    H run key n attempt redelivered      a handler started on it (redelivered: 0/1)
    S run key tag count last t           snapshot() returned this state (t: monotonic)
    R run key tag count last             restore() received this state
    A run key tag                        on_start of an incarnation restored from tag (- if none)
    X run key detail                     something impossible seen inside the child

The messages of one key are numbered 1, 2, 3... across the whole chain (a child
continues after the largest n with an intent line), and only one producer sends
to a given key, so a key's acceptance order is the order of its numbers.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

N_KEYS = 8
N_PRODUCERS = 4
FINAL_ROUNDS = 3  # bursts per key in the final run


def key_token(key: str | int) -> str:
    """A key as it appears in the facts file (an int key stays distinguishable)."""
    return str(key)


def parse_key(token: str) -> str | int:
    """The key a token of the facts file stands for."""
    return int(token) if token.isdigit() else token


KEYS: list[str | int] = [f"u{i}" for i in range(N_KEYS - 1)] + [N_KEYS - 1]


def main(argv: list[str]) -> int:
    """Run one child of the chain; see the module documentation."""
    package_dir, journal_path, facts_path = argv[1], argv[2], argv[3]
    signal_fd, run, seed, mode = int(argv[4]), int(argv[5]), int(argv[6]), argv[7]
    sys.path.insert(0, package_dir)

    from actors import Context, SQLiteJournal, UserActor
    from supervisors import Runtime

    rng = random.Random(seed)
    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def fact(*fields: object) -> None:
        os.write(facts, (" ".join(str(f) for f in fields) + "\n").encode())

    def signal(line: str) -> None:
        os.write(signal_fd, (line + "\n").encode())

    # Where each key's numbering goes on: after the largest n any child announced.
    next_n = dict.fromkeys(KEYS, 1)
    with open(facts_path, encoding="ascii") as f:
        for line in f:
            if line.startswith("I "):
                _, _, token, n = line.split()
                key = parse_key(token)
                next_n[key] = max(next_n[key], int(n) + 1)

    serial = iter(range(1, 1 << 62))

    class Counter(UserActor):
        """Counts the messages it handles; the count and the last n are its state."""

        def __init__(self, key: str | int) -> None:
            super().__init__(key)
            self.count = 0
            self.last = 0
            self.tag = "-"

        def restore(self, state: Any) -> None:
            self.tag, self.count, self.last = state["tag"], state["count"], state["last"]
            fact("R", run, key_token(self.key), self.tag, self.count, self.last)

        def on_start(self) -> None:
            fact("A", run, key_token(self.key), self.tag)

        def snapshot(self) -> Any:
            self.tag = f"{run}.{next(serial)}"
            fact(
                "S",
                run,
                key_token(self.key),
                self.tag,
                self.count,
                self.last,
                f"{time.monotonic():.6f}",
            )
            return {"tag": self.tag, "count": self.count, "last": self.last}

        def begin(self, message: Any, ctx: Context) -> int:
            _, key, n = message
            if key != self.key or type(key) is not type(self.key) or ctx.key != self.key:
                fact("X", run, key_token(self.key), f"message-for-{key!r}")
            fact("H", run, key_token(self.key), n, ctx.attempt, int(ctx.redelivered))
            return int(n)

        def end(self, n: int) -> None:
            self.count += 1
            self.last = n

        def on_message(self, message: Any, ctx: Context) -> None:
            self.end(self.begin(message, ctx))

    class AsyncCounter(Counter):
        """The same, with an async handler that awaits in the middle."""

        async def on_message(self, message: Any, ctx: Context) -> None:  # type: ignore[override]
            n = self.begin(message, ctx)
            await asyncio.sleep(0.001 if n % 5 == 0 else 0)
            self.end(n)

    def factory(key: str | int) -> Counter:
        return AsyncCounter(key) if KEYS.index(key) % 2 == 0 else Counter(key)

    sync = rng.choice(["normal", "full"])
    max_delay_ms = rng.choice([0, 1, 5])
    store: Any = (
        journal_path
        if sync == "normal" and rng.random() < 0.5
        else SQLiteJournal(journal_path, sync=sync, max_delay_ms=max_delay_ms)
    )
    idle_timeout = rng.choice([0.05, 0.08])

    async def produce(rt: Runtime, mine: list[str | int], asks: list[Any], final: bool) -> None:
        """Bursts of tells/asks closed by a send; the burst is confirmed when the send returns.

        The burst's messages are accepted in one loop pass, so they are in the send's
        batch (or an earlier one): its commit makes them durable too.
        """
        rounds = 0
        while not final or rounds < FINAL_ROUNDS * len(mine):
            key = mine[rounds % len(mine)] if final else rng.choice(mine)
            rounds += 1
            burst = [next_n[key] + i for i in range(rng.randint(1, 8))]
            next_n[key] = burst[-1] + 1
            for n in burst[:-1]:
                fact("I", run, key_token(key), n)
                if rng.random() < 0.2:
                    asks.append(rt.ask(key, ("m", key, n)))
                else:
                    rt.tell(key, ("m", key, n))
            n = burst[-1]
            fact("I", run, key_token(key), n)
            await rt.send(key, ("m", key, n))
            for m in burst:
                fact("C", run, key_token(key), m)
            # Pacing: mostly busy, sometimes long enough for the key to go idle.
            await asyncio.sleep(rng.choice([0, 0, 0, 0, 0, 0, 0.001, 0.003, 0.1]))

    async def scenario() -> None:
        final = mode == "final"
        if not final:
            # A child whose parent went away must not outlive it for long.
            asyncio.get_running_loop().call_later(60, os._exit, 3)
        asks: list[Any] = []
        async with Runtime(factory, store=store, idle_timeout=idle_timeout) as rt:
            signal("running")
            producers = [
                asyncio.create_task(produce(rt, KEYS[p::N_PRODUCERS], asks, final))
                for p in range(N_PRODUCERS)
            ]
            if not final:
                await asyncio.Event().wait()  # until SIGKILL
            await asyncio.gather(*producers)
            for ask in asks:
                await ask
            await rt.wait_idle()
            signal(f"replayed {rt.stats()['replayed']}")
        signal("done")

    asyncio.run(scenario())
    os.close(facts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
