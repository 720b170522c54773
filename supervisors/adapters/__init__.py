"""inorder's framework adapters: a bot framework's updates into per-chat actors.

One module per framework, each an optional extra, none imported by this package:

* `supervisors.adapters.ptb`: python-telegram-bot 22 (`pip install 'inorder[telegram]'`);
* `supervisors.adapters.aiogram3`: aiogram 3 (`inorder[aiogram]`);
* `supervisors.adapters.discordpy`: discord.py 2 (`inorder[discord]`);
* `supervisors.adapters.bolt`: Slack Bolt for Python, async (`inorder[slack]`).

Importing one without its framework raises an `ImportError` that names the extra.
The names differ from the frameworks' own packages so that none shadows one.

What happens when, for `bridge = inorder_for(app, Bot, ...)` in any of them:

* **wiring** (the call): a `Runtime(Bot, ...)` is built with the other keywords,
  the framework's update class is registered in its codec (stored as the
  platform's raw JSON, rebuilt as the framework's object bound to its bot), and
  the runtime's start and stop are hooked into the framework's own lifecycle;
* **each update**: the framework delivers it; the adapter finds its key (per chat
  by default, or per thread or user), its platform id (the `msg_id` that makes a
  redelivery a no-op) and its command, and sends it to the actor: a command named
  in `interrupts` or `clears` on the control lane, so that `/stop` acts now;
* **in the handler**: a platform rate-limit error (Telegram's `RetryAfter`,
  Discord's 429, Slack's `ratelimited`) becomes inorder's `RetryAfter`: the key
  pauses and the same update runs again;
* **framework shutdown**: the runtime drains and stops.

The shared part is `_bridge.py`; each adapter's own is in its `_`-module.
"""

__all__: list[str] = []
