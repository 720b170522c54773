"""The child process of tests/test_steering_crash.py: a steering turn killed mid-flight.

Run as a script, never imported by the suite:

    python -P _steering_child.py PACKAGE_DIR JOURNAL FACTS MODE

`MODE` "hold": the child sends "q", "m1" and "m2" to key "u" (each durable before
the next: `await send`), and the handler of "q" takes "m1" and "m2" into its turn
(`ctx.next_message()`), writes the fact `T hold q m1 m2`, prints "holding" and
waits forever; once the three sends returned (durable) it prints "sent". The parent,
having read both, kills it with SIGKILL. `MODE` "after": the child opens
the same journal (whose replay comes first), sends "m3", records every turn as
`T after <messages>`, stops cleanly once "m3" is handled, and exits 0.

Facts are appended one line per `os.write` on an `O_APPEND` descriptor, so a line
written before the SIGKILL is in the file.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    package_dir, journal, facts_path, mode = argv[1:5]
    sys.path.insert(0, package_dir)
    from actors import Context, UserActor
    from supervisors import Runtime

    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = asyncio.Event()

    def fact(line: str) -> None:
        os.write(facts, (line + "\n").encode())

    class Steerer(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            got = [message]
            if message == "q":
                while len(got) < 3:
                    item = await ctx.next_message(timeout=10.0)
                    if item is None:
                        break
                    got.append(item.message)
            fact(f"T {mode} {' '.join(got)} {int(ctx.redelivered)}")
            if mode == "hold" and message == "q":
                print("holding", flush=True)
                await asyncio.Event().wait()  # killed here, holding m1 and m2
            if "m3" in got:
                done.set()

    async def run() -> None:
        async with Runtime(Steerer, store=journal, idle_timeout=None) as rt:
            if mode == "hold":
                for message in ("q", "m1", "m2"):
                    await rt.send("u", message)
                print("sent", flush=True)  # all three durable
                await asyncio.Event().wait()
            else:
                await rt.send("u", "m3")
                await asyncio.wait_for(done.wait(), 20)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
