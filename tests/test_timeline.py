"""The restart timeline printed in the README, checked in virtual time."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from actors import Context, UserActor
from actors.testing import FakeClock
from supervisors import RestartPolicy, Runtime


async def test_readme_restart_timeline(clock: FakeClock) -> None:
    """m2 and m3 fail: restarts at t=0.1 and t=0.3 (backoff 0.1 then 0.2), m4 handled at 0.3."""
    journal: list[tuple[float, str]] = []

    class Bot(UserActor):
        def on_start(self) -> None:
            journal.append((clock.now(), "on_start"))

        def on_message(self, message: Any, ctx: Context) -> Any:
            if message in ("m2", "m3"):
                journal.append((clock.now(), f"{message} fails"))
                raise RuntimeError(message)
            journal.append((clock.now(), f"{message} handled"))
            return message

        def on_stop(self, reason: str) -> None:
            journal.append((clock.now(), f"on_stop({reason})"))

    policy = RestartPolicy(backoff_min=0.1, backoff_factor=2, jitter=0)
    with capture_logs() as logs:
        async with Runtime(Bot, clock=clock, restart=policy, idle_timeout=None) as rt:
            for m in ("m1", "m2", "m3", "m4"):
                rt.tell("telegram:42", m)
            await rt.wait_idle()
            await clock.advance(0.1)
            await rt.wait_idle()
            await clock.advance(0.2)
            await rt.wait_idle()
            stats = rt.stats()

    assert [(round(t, 9), what) for t, what in journal] == [
        (0.0, "on_start"),
        (0.0, "m1 handled"),
        (0.0, "m2 fails"),
        (0.0, "on_stop(restart)"),
        (0.1, "on_start"),
        (0.1, "m3 fails"),
        (0.1, "on_stop(restart)"),
        (0.3, "on_start"),
        (0.3, "m4 handled"),
        (0.3, "on_stop(shutdown)"),
    ]
    delays = [e["delay_s"] for e in logs if e["event"] == "actor_restart_scheduled"]
    assert delays == [0.1, 0.2]
    assert [e["event"] for e in logs].count("actor_restarted") == 2
    assert (stats["handled"], stats["failed"], stats["restarts"]) == (2, 2, 2)
