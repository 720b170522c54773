"""inorder for python-telegram-bot (22): each chat's updates to its own actor, in order.

```python
from telegram.ext import ApplicationBuilder
from supervisors.adapters.ptb import inorder_for

application = ApplicationBuilder().token(TOKEN).build()
bridge = inorder_for(application, Bot, clears=("stop",), store="bot.db")
application.run_polling()  # the runtime starts and stops with the application
```

What happens when:

* **`inorder_for(...)`**: builds the `Runtime(Bot, ...)` (every keyword it does
  not take itself goes there), registers `telegram.Update` in its codec (the
  update's Bot API JSON; decoded with `Update.de_json(data, application.bot)`, so
  `update.message.reply_text()` works on a replayed update too), adds one
  handler for every update, and chains the runtime's start and stop into the
  application's `post_init`, `post_stop` and `post_shutdown`;
* **an update arrives**: it is sent to `key(update)`'s actor (`by_chat`,
  `by_topic`, `by_user` or your own function), with `msg_id="telegram:{update_id}"`
  so that a redelivered update is handled once. A message starting with a command
  named in `interrupts` (default `/stop`, `/cancel`) is sent at `priority` with
  `interrupt=True`: it cuts the reply in flight; one named in `clears` also drops
  what waits. The handler returns once the update is accepted (with a store:
  journaled), and no other handler of the application sees it;
* **a handler hits flood control**: Telegram's `RetryAfter` raised in `on_message`
  becomes inorder's `RetryAfter`: the chat pauses for the time Telegram asked,
  and the same update runs again;
* **the application stops**: the runtime drains (replies can still be sent), then
  stops. An application run by hand: `async with application, bridge: ...`.

Importing this module without python-telegram-bot raises an `ImportError` that
names the extra: `pip install 'inorder[telegram]'`.
"""

try:
    import telegram.ext  # noqa: F401
except ImportError as error:  # the extra is not installed
    msg = "supervisors.adapters.ptb needs python-telegram-bot: pip install 'inorder[telegram]'"
    raise ImportError(msg) from error

from supervisors.adapters._bridge import Bridge
from supervisors.adapters._ptb import (
    TAG,
    by_chat,
    by_topic,
    by_user,
    command_of,
    inorder_for,
    msg_id_of,
    retry_after_of,
)

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
