"""inorder for Slack Bolt for Python (async): each conversation's messages to its own actor.

```python
from slack_bolt.async_app import AsyncApp
from supervisors.adapters.bolt import inorder_for

app = AsyncApp(token=BOT_TOKEN, signing_secret=SIGNING_SECRET)
bridge = inorder_for(app, Bot, clears=("stop",), store="bot.db")
app.start(port=3000)  # the runtime starts and stops with Bolt's web server
```

What happens when:

* **`inorder_for(...)`**: builds the `Runtime(Bot, ...)` (every keyword it does
  not take itself goes there), registers `SlackEvent` in its codec (the request
  body Slack sent; rebuilt bound to `app.client`, so `await event.say(...)` works
  on a replayed event too), adds one global middleware to the app, and hooks the
  runtime's start and stop into the aiohttp web app Bolt serves (`on_startup`,
  `on_cleanup`), or into the `AsyncSocketModeHandler` given instead of the app;
* **a message arrives**: a person's message (not a bot's, not an edit or a join)
  is sent to `key(event)`'s actor as a `SlackEvent` (`by_thread`: a thread is its
  own conversation; `by_channel`, `by_user` or your own function), with
  `msg_id="slack:{event_id}"`, so that Slack's retries (`X-Slack-Retry-Num`) are
  handled once. A slash command named in `interrupts` (default `/stop`,
  `/cancel`), or a message that says just "stop", is sent at `priority` with
  `interrupt=True`: it cuts the reply in flight; one named in `clears` also drops
  what waits. Slack gets its 200 once the update is accepted (with a store:
  journaled); no listener of the app sees it, while everything else goes on to
  the app's own listeners;
* **a handler is rate limited**: slack_sdk's `SlackApiError` for a 429
  (`ratelimited`) raised in `on_message` becomes inorder's `RetryAfter`: the
  conversation pauses for Slack's `Retry-After`, and the same event runs again;
* **Bolt's server stops** (or the Socket Mode handler closes): the runtime drains
  (replies can still be posted), then stops. Served any other way (a FastAPI or
  Starlette adapter): `async with bridge: ...` around it.

Importing this module without slack-bolt (and aiohttp, which its async app needs)
raises an `ImportError` that names the extra: `pip install 'inorder[slack]'`.
"""

try:
    import aiohttp  # noqa: F401
    import slack_bolt  # noqa: F401
except ImportError as error:  # the extra is not installed
    msg = "supervisors.adapters.bolt needs slack-bolt and aiohttp: pip install 'inorder[slack]'"
    raise ImportError(msg) from error

from supervisors.adapters._bolt import EVENTS, inorder_for, retry_after_of
from supervisors.adapters._bolt_event import (
    TAG,
    SlackEvent,
    by_channel,
    by_thread,
    by_user,
    command_of,
    msg_id_of,
)
from supervisors.adapters._bridge import Bridge

__all__ = [
    "EVENTS",
    "TAG",
    "Bridge",
    "SlackEvent",
    "by_channel",
    "by_thread",
    "by_user",
    "command_of",
    "inorder_for",
    "msg_id_of",
    "retry_after_of",
]
