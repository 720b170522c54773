"""The Telegram Bot API at python-telegram-bot's HTTP seam, for the adapter's tests.

`FakeBotAPI` is a `telegram.request.BaseRequest`: PTB builds every call to the Bot
API (`getMe`, `getUpdates`, `sendMessage`, ...) as it would for Telegram and hands
it to `do_request`, which answers from memory instead of the network. Updates are
Bot API JSON (`update_json`), turned into PTB's own `Update` by PTB itself.
Imported by tests/test_adapter_telegram.py and its crash test's child.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

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


class FakeBotAPI(BaseRequest):
    """Answers PTB's Bot API calls from memory.

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
        name = url.rsplit("/", 1)[-1]
        self.calls.append(name)
        params = request_data.parameters if request_data is not None else {}
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
                return 429, json.dumps(body).encode()
            text = str(params["text"])
            self.sent.append((chat_id, text))
            result = {
                "message_id": len(self.sent),
                "date": 1_700_000_000,
                "chat": {"id": chat_id, "type": "private", "first_name": "U"},
                "from": BOT_USER,
                "text": text,
            }
        return 200, json.dumps({"ok": True, "result": result}).encode()
