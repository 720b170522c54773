"""The quick start works as the README shows it."""

from __future__ import annotations

from typing import Any

from actors import Context, UserActor
from supervisors import Runtime


class Echo(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        return (ctx.key, message)


async def test_ask_returns_the_handler_result() -> None:
    async with Runtime(Echo) as rt:
        assert await rt.ask("telegram:1", "hi") == ("telegram:1", "hi")


def test_background_thread_mode() -> None:
    with Runtime(Echo) as rt:
        rt.tell("discord:2", "x")
        assert rt.ask("discord:2", "y").get(timeout=5) == ("discord:2", "y")
