"""A simulated chat bot with its metrics and its dashboard on 127.0.0.1.

Run it with ``python -m examples.dashboard_demo [--port 8321] [--seconds S]`` (or
``make demo-dashboard``) and open the URL it prints. Chat users send messages at
random; the bot's LLM-like handler awaits 20-400 ms, and one message in fifty fails
with a simulated provider error, which leaves a dead letter to redeliver from the
page. `/metrics` on the same port is the Prometheus exposition. Without
``--seconds`` it runs until Ctrl-C; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
from typing import Any

from actors import Context, UserActor
from supervisors import RestartPolicy, Runtime
from supervisors.observe import AdminServer, Metrics


class ProviderError(RuntimeError):
    """The simulated LLM provider failed (HTTP 500)."""


class Bot(UserActor):
    """Answers after a simulated LLM call; now and then the provider fails."""

    async def on_message(self, message: Any, ctx: Context) -> str:
        await asyncio.sleep(random.uniform(0.02, 0.4))
        if random.random() < 0.02:
            raise ProviderError(f"provider returned 500 for {message!r}")
        return f"answer to {message!r}"


async def chatter(rt: Runtime, users: int, rate: float) -> None:
    """`rate` messages per second in all, to `users` users; five of them talk much more."""
    n = 0
    while True:
        user = random.randrange(5) if random.random() < 0.2 else random.randrange(users)
        platform = ("telegram", "discord", "whatsapp")[user % 3]
        rt.tell(f"{platform}:{user}", f"message {n}")
        n += 1
        await asyncio.sleep(random.expovariate(rate))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.dashboard_demo")
    parser.add_argument("--port", type=int, default=8321, help="0: any free port")
    parser.add_argument("--seconds", type=float, default=None, help="default: until Ctrl-C")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rate", type=float, default=60.0, help="messages per second")
    args = parser.parse_args(argv)
    admin = AdminServer(port=args.port)
    rt = Runtime(
        Bot,
        idle_timeout=30.0,
        restart=RestartPolicy(max_retries=0),
        log_level="CRITICAL",  # the failures are the point: the page shows them
        observe=[Metrics(), admin],
    )
    try:
        await rt.start()
    except OSError as exc:
        print(f"cannot serve the dashboard on port {args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"dashboard: {admin.url}/   metrics: {admin.url}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    traffic = asyncio.create_task(chatter(rt, args.users, args.rate))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds)
    traffic.cancel()
    summary = await rt.stop(timeout=5.0)
    stats = rt.stats()
    print(
        f"stopped: {stats['handled']} handled, {stats['failed']} failed, "
        f"{stats['dead_letters_kept']} dead letters; {summary}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
