"""`inorder dashboard`: the admin endpoint's page over a cluster or a journal file.

    inorder dashboard (--redis URL [--prefix NS] | --journal FILE)
                      [--host 127.0.0.1] [--port 8321] [--token T] [--refresh S]

A running runtime serves its own dashboard (`AdminServer` among its observers);
this command serves the same page where no runtime of this process is: a whole
cluster read straight from Redis (`ClusterInspector`: every shard, its owner and
lag, the nodes' published figures, dead letters with Redeliver and Purge), or the
journal file of a stopped bot. It prints the page's URL on its first line, serves
until Ctrl-C or SIGTERM (exit 0), and, like `AdminServer`, refuses an address
other than loopback without a token (`--token`, default `$INORDER_ADMIN_TOKEN`),
which the page then needs in its URL's fragment (`#token=...`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING

from supervisors.observe._cli_targets import OK, UNREACHABLE, USAGE, CliError

if TYPE_CHECKING:
    import argparse

    from supervisors.observe._source import Source

__all__ = ["add_dashboard_arguments", "serve_dashboard"]


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard command's options (its targets: a cluster or a journal file)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--redis", metavar="URL", help="a cluster's Redis, redis://HOST:PORT/DB")
    group.add_argument("--journal", metavar="FILE", help="a stopped bot's journal file")
    parser.add_argument("--prefix", default="inorder", help="the cluster's namespace (--redis)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per Redis request")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on")
    parser.add_argument("--port", type=int, default=8321, help="the port (0: any free one)")
    parser.add_argument(
        "--token",
        default=os.environ.get("INORDER_ADMIN_TOKEN") or None,
        help="a token the page and the API need (default: $INORDER_ADMIN_TOKEN); "
        "required for an address other than loopback",
    )
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between reads")


async def serve_dashboard(source: Source, args: argparse.Namespace) -> int:
    """Serve the page over `source` until Ctrl-C or SIGTERM."""
    from supervisors.observe._admin import AdminServer

    try:
        admin = AdminServer(
            host=args.host, port=args.port, token=args.token, source=source, refresh=args.refresh
        )
    except (TypeError, ValueError) as exc:
        raise CliError(USAGE, str(exc)) from None
    try:
        await admin.start()
    except OSError as exc:
        raise CliError(UNREACHABLE, f"cannot serve on {args.host}:{args.port}: {exc}") from None
    try:
        fragment = "#token=..." if args.token else ""
        print(f"dashboard: {admin.url}/{fragment}   (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await admin.close()
    return OK
