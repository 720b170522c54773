"""inorder for aiogram 3: each chat's updates to its own actor, in order.

```python
from aiogram import Bot, Dispatcher
from supervisors.adapters.aiogram3 import inorder_for

bot, dispatcher = Bot(TOKEN), Dispatcher()
bridge = inorder_for(dispatcher, Agent, bot=bot, clears=("stop",), store="bot.db")
await dispatcher.start_polling(bot)  # the runtime starts and stops with the dispatcher
```

What happens when:

* **`inorder_for(...)`**: builds the `Runtime(Agent, ...)` (every keyword it does
  not take itself goes there), registers `aiogram.types.Update` in its codec (the
  update's Bot API JSON; decoded with `Update.model_validate(data, context={"bot":
  bot})`, so `update.message.answer()` works on a replayed update too), adds an
  outer middleware on `dispatcher.update`, and registers the runtime's start and
  stop on the dispatcher's `startup` (first) and `shutdown` events;
* **an update arrives** (polling or webhook): it is sent to `key(update)`'s actor
  (`by_chat`, `by_topic`, `by_user` or your own function), with
  `msg_id="telegram:{update_id}"` so that a redelivered update is handled once. A
  message starting with a command named in `interrupts` (default `/stop`,
  `/cancel`) is sent at `priority` with `interrupt=True`: it cuts the reply in
  flight; one named in `clears` also drops what waits. The middleware returns once
  the update is accepted (with a store: journaled), and no router sees it;
* **a handler hits flood control**: aiogram's `TelegramRetryAfter` raised in
  `on_message` becomes inorder's `RetryAfter`: the chat pauses for the time
  Telegram asked, and the same update runs again;
* **the dispatcher shuts down**: the runtime drains (the bot can still send), then
  stops. A dispatcher driven by hand: `async with bridge: ...`.

Importing this module without aiogram raises an `ImportError` that names the
extra: `pip install 'inorder[aiogram]'`.
"""

try:
    import aiogram  # noqa: F401
except ImportError as error:  # the extra is not installed
    msg = "supervisors.adapters.aiogram3 needs aiogram 3: pip install 'inorder[aiogram]'"
    raise ImportError(msg) from error

from supervisors.adapters._aiogram3 import (
    TAG,
    by_chat,
    by_topic,
    by_user,
    command_of,
    inorder_for,
    msg_id_of,
    retry_after_of,
)
from supervisors.adapters._bridge import Bridge

__all__ = [
    "TAG",
    "Bridge",
    "by_chat",
    "by_topic",
    "by_user",
    "command_of",
    "inorder_for",
    "msg_id_of",
    "retry_after_of",
]
