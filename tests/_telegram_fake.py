"""The Telegram Bot API at the frameworks' HTTP seams, for the adapters' tests.

`BotAPI` answers Bot API calls (`getMe`, `getUpdates`, `sendMessage`) from memory.
`FakeBotAPI` puts it at python-telegram-bot's seam, a `telegram.request.BaseRequest`:
PTB builds every call as it would for Telegram and hands it to `do_request`.
`FakeSession` puts it at aiogram's, a `BaseSession`: aiogram hands it each method,
and checks the answer with its own `check_response` (which raises its
`TelegramRetryAfter` on a 429). Updates are Bot API JSON (`update_json`), turned
into each framework's own `Update` by the framework itself. Imported by
tests/test_adapter_telegram.py, tests/test_adapter_aiogram.py and their crash
tests' children.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from aiogram.client.session.base import BaseSession
from telegram.request import BaseRequest, RequestData

BOT_ID = 123456
TOKEN = f"{BOT_ID}:TEST-TOKEN"
BOT_USER = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Inorder",
    "username": "InorderBot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


def update_json(
    update_id: int, chat_id: int, text: str, *, thread: int | None = None, user_id: int = 0
) -> dict[str, Any]:
    """A message update as the Bot API sends it (a forum topic's if `thread` is given)."""
    chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": "U"}
    if thread is not None:
        chat = {"id": chat_id, "type": "supergroup", "title": "Forum", "is_forum": True}
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": 1_700_000_000,
        "chat": chat,
        "from": {"id": user_id or abs(chat_id), "is_bot": False, "first_name": "U"},
        "text": text,
    }
    if text.startswith("/"):
        length = len(text.split()[0])
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    if thread is not None:
        message["message_thread_id"] = thread
        message["is_topic_message"] = True
    return {"update_id": update_id, "message": message}


class BotAPI:
    """Answers Bot API calls from memory.

    `updates`: served by `getUpdates` (then an empty long poll); `sent`: every
    `sendMessage` as `(chat_id, text)`; `flood[chat_id] = n`: the next
    `sendMessage` to that chat answers 429 with `retry_after` n, as Telegram's
    flood control does.
    """

    def __init__(self, updates: list[dict[str, Any]] | None = None) -> None:
        self.updates: deque[dict[str, Any]] = deque(updates or ())
        self.sent: list[tuple[int, str]] = []
        self.flood: dict[int, int] = {}
        self.calls: list[str] = []

    async def answer(self, name: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body Telegram would answer to method `name`."""
        self.calls.append(name)
        result: Any = True
        if name == "getMe":
            result = BOT_USER
        elif name == "getUpdates":
            offset = int(params.get("offset", 0) or 0)
            while self.updates and self.updates[0]["update_id"] < offset:
                self.updates.popleft()
            result = list(self.updates)
            self.updates.clear()
            if not result:
                await asyncio.sleep(0.01)  # a long poll with nothing new
        elif name == "sendMessage":
            chat_id = int(str(params["chat_id"]))
            wait = self.flood.pop(chat_id, None)
            if wait is not None:
                body = {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {wait}",
                    "parameters": {"retry_after": wait},
                }
                return 429, body
            text = str(params["text"])
            self.sent.append((chat_id, text))
            result = {
                "message_id": len(self.sent),
                "date": 1_700_000_000,
                "chat": {"id": chat_id, "type": "private", "first_name": "U"},
                "from": BOT_USER,
                "text": text,
            }
        return 200, {"ok": True, "result": result}


class FakeBotAPI(BotAPI, BaseRequest):
    """`BotAPI` at python-telegram-bot's HTTP seam."""

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        params = request_data.parameters if request_data is not None else {}
        status, body = await self.answer(url.rsplit("/", 1)[-1], dict(params))
        return status, json.dumps(body).encode()


class FakeSession(BotAPI, BaseSession):
    """`BotAPI` at aiogram's HTTP seam."""

    def __init__(self, updates: list[dict[str, Any]] | None = None) -> None:
        BotAPI.__init__(self, updates)
        BaseSession.__init__(self)

    async def close(self) -> None:
        pass

    async def make_request(self, bot: Any, method: Any, timeout: int | None = None) -> Any:
        params = {k: v for k, v in dict(method).items() if v is not None}
        status, body = await self.answer(method.__api_method__, params)
        return self.check_response(bot, method, status, json.dumps(body)).result

    async def stream_content(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # no file downloads in these tests
