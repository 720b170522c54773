"""The child process of tests/test_adapter_slack.py's kill -9 test: a durable Slack bot.

Run as a script, never imported by the suite:

    python -P _slack_child.py PACKAGE_DIR FAKE_SLACK_URL JOURNAL FACTS MODE

A Bolt `AsyncApp` whose client talks to the parent's fake Slack API, wired with
`inorder_for(app, Bot, key=by_channel, store=JOURNAL)`, gets signed Events API
requests through `app.async_dispatch`. `MODE` "hold": it dispatches "first",
"second" and "third" to channel C1 (the third in a thread), each answered by Bolt
only once journaled; the handler of "first" writes its fact, prints "holding" and
waits forever; once the three dispatches returned it prints "sent", and the parent
kills it with SIGKILL. `MODE` "after": the same journal (its replay comes first);
every turn writes `T after <event_id> <text> <class> <client> <redelivered>` and
replies with `event.say("re: <text>")`; Slack's retry of "second" and then a new
"fourth" are dispatched; once "fourth" is handled the bot stops cleanly, exit 0.

Facts are appended one line per `os.write` on an `O_APPEND` descriptor, so a line
written before the SIGKILL is in the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    package_dir, url, journal, facts_path, mode = argv[1:6]
    sys.path.insert(0, package_dir)
    from slack_bolt.app.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.signature import SignatureVerifier
    from slack_sdk.web.async_client import AsyncWebClient

    from actors import Context, UserActor
    from supervisors.adapters.bolt import SlackEvent, by_channel, inorder_for

    secret = "child-signing-secret"
    facts = os.open(facts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = asyncio.Event()
    app = AsyncApp(
        client=AsyncWebClient(token="xoxb-test", base_url=f"{url}/api/"),
        signing_secret=secret,
        name="child",
    )

    def fact(line: str) -> None:
        os.write(facts, (line + "\n").encode())

    def request(event_id: str, text: str, retry: int | None = None, **fields: Any) -> Any:
        event = {"type": "message", "user": "U1", "text": text, "channel": "C1"}
        event |= {"channel_type": "channel", "ts": f"17000000{len(text)}.0001", **fields}
        body = {"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": event}
        raw = json.dumps({"token": "legacy", **body})
        stamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-slack-request-timestamp": stamp,
            "x-slack-signature": SignatureVerifier(secret).generate_signature(
                timestamp=stamp, body=raw
            ),
        }
        if retry is not None:
            headers["x-slack-retry-num"] = str(retry)
        return AsyncBoltRequest(body=raw, headers=headers)

    class Bot(UserActor):
        async def on_message(self, event: SlackEvent, ctx: Context) -> None:
            bound = "app.client" if event.client is app.client else "another client"
            fact(
                f"T {mode} {event.event_id} {event.text} {type(event).__name__} {bound} "
                f"{int(ctx.redelivered)}"
            )
            if mode == "hold":
                print("holding", flush=True)
                await asyncio.Event().wait()  # killed here, "second" and "third" waiting
            await event.say(f"re: {event.text}")
            if event.text == "fourth":
                done.set()

    async def dispatch(update: Any) -> None:
        response = await app.async_dispatch(update)
        if response.status != 200:
            raise RuntimeError(f"Bolt answered {response.status}: {response.body}")

    async def run() -> None:
        async with inorder_for(app, Bot, key=by_channel, store=journal, idle_timeout=None):
            if mode == "hold":
                await dispatch(request("Ev1", "first"))
                await dispatch(request("Ev2", "second"))
                await dispatch(request("Ev3", "third", thread_ts="1700000000.000100"))
                print("sent", flush=True)  # all three journaled before Bolt answered
                await asyncio.Event().wait()
            else:
                await dispatch(request("Ev2", "second", retry=1))  # a duplicate
                await dispatch(request("Ev4", "fourth"))
                await asyncio.wait_for(done.wait(), 20)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
