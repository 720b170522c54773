"""inorder for discord.py 2: each channel's messages to its own actor, in order.

```python
import discord
from supervisors.adapters.discordpy import inorder_for

client = discord.Client(intents=intents)  # or a commands.Bot; intents.message_content = True
bridge = inorder_for(client, Bot, clears=("stop",), store="bot.db")
client.run(TOKEN)  # the runtime starts in setup_hook and stops in close
```

What happens when:

* **`inorder_for(...)`**: builds the `Runtime(Bot, ...)` (every keyword it does
  not take itself goes there), registers `discord.Message` in its codec (the
  gateway's MESSAGE_CREATE payload, kept as it arrives; rebuilt by discord.py on
  the client's state, so `message.reply()` works on a replayed message too, its
  channel a `PartialMessageable` until the cache is warm), and chains the
  runtime's start and stop into the client's `setup_hook` and `close` (on the
  instance: no subclass needed, and a subclass's or an assigned hook still runs);
* **a message arrives**: a person's message (not this bot's, not another bot's
  unless `ignore_bots=False`, not a system message) is sent to `key(message)`'s
  actor as the `discord.Message` itself (`by_channel`: a DM, a channel or a
  thread each; `by_user`, or your own function), with
  `msg_id="discord:{message_id}"`, so that an event the gateway replays is
  handled once. One starting with a prefix ("!" or "/") and a command named in
  `interrupts` (default stop, cancel) is sent at `priority` with
  `interrupt=True`: `!stop` cuts the reply in flight; one named in `clears` also
  drops what waits. A `commands.Bot` gets a listener, beside its commands; a
  plain `Client` an `on_message` that then awaits the one you gave it;
* **a handler is rate limited**: the 429 that discord.py did not retry away
  (`RateLimited`, or an `HTTPException` of status 429) raised in `on_message`
  becomes inorder's `RetryAfter`: the channel pauses for Discord's wait, and the
  same message runs again;
* **the client closes** (`client.close()`, the end of `client.run()`): the
  runtime drains (replies can still be sent), then stops, then the client
  closes. A client driven without a login: `async with bridge: ...`.

Slash-command interactions are not messages and are not routed. Importing this
module without discord.py raises an `ImportError` that names the extra: `pip
install 'inorder[discord]'`.
"""

try:
    import discord  # noqa: F401
except ImportError as error:  # the extra is not installed
    msg = "supervisors.adapters.discordpy needs discord.py: pip install 'inorder[discord]'"
    raise ImportError(msg) from error

from supervisors.adapters._bridge import Bridge
from supervisors.adapters._discordpy import (
    DEFAULT_PREFIXES,
    TAG,
    by_channel,
    by_user,
    command_of,
    inorder_for,
    msg_id_of,
    retry_after_of,
)

__all__ = [
    "DEFAULT_PREFIXES",
    "TAG",
    "Bridge",
    "by_channel",
    "by_user",
    "command_of",
    "inorder_for",
    "msg_id_of",
    "retry_after_of",
]
