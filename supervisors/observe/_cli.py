"""The operations command line: `python -m supervisors ...`, or the `inorder` script.

    inorder status (--url URL [--token T] | --redis URL [--prefix NS]) [--json] [--watch S]
    inorder dead-letters list (--journal FILE | --url URL | --redis URL) [--json]
    inorder dead-letters redeliver ID... (--journal FILE | --url URL | --redis URL)
    inorder dead-letters purge (--all | ID...) (--journal FILE | --url URL | --redis URL)
    inorder journal check FILE [--json]
    inorder journal compact FILE [--json]
    inorder journal export FILE [--out PATH|-]
    inorder dashboard (--redis URL | --journal FILE) [--host H] [--port N] [--token T]

What happens when:

* **`status --url`** reads a running runtime's admin endpoint
  (`AdminServer`: `GET /api/status`, `Runtime.stats()` as JSON) twice,
  `--sample` seconds apart (default 1; 0: once), for the outcome rates; the
  tables show the figures, rates, wait/run percentiles, the deepest and the
  longest-running keys and, for a cluster node, its shards and lag.
  **`status --redis`** reads the cluster straight from Redis
  (`supervisors.cluster.ClusterInspector`): the nodes with their published
  summaries and rates, every shard's owner, epoch, lease, lag, pending entries
  and dead letters, and the totals. `--watch S` redraws every S seconds until
  Ctrl-C (exit 0); with `--json`, one JSON object per read (`status` of the
  `Source` protocol, plus `rates`), a line each when watching.
* **`dead-letters`** lists (a table, or `--json`: a list of the protocol's
  letter dicts), redelivers or purges dead letters of a runtime (`--url`), a
  cluster (`--redis`) or a journal file of a stopped bot (`--journal`;
  supervisors/observe/_cli_journal.py says how a letter goes back).
* **`journal`** works on a journal file offline: `check` (read only, exit 1
  with the reason for a broken or foreign file), `compact` (VACUUM and WAL
  truncation, sizes before and after), `export` (JSON lines: the pending
  messages, the dead letters and the snapshots).

Every failure is one line on stderr, `inorder: ...`, never a traceback, with
an exit code (`EXIT_CODES`, also in every `--help`):

    0  ok
    1  a problem was found, or the operation failed (a broken journal in
       `check`, an unknown letter id, an HTTP 500 or another Redis error)
    2  usage error: bad arguments, a malformed URL or namespace, a missing extra
    3  the target cannot be reached or opened: connection refused, no answer
       within `--timeout`, an unknown host, no admin endpoint or no cluster of
       that namespace there, a missing file, a file that is not a journal, a
       journal in use by a running bot
    4  the target refused the credentials, or asked for some (HTTP 401/403,
       Redis NOAUTH/WRONGPASS)

Output goes to stdout. `--token` defaults to `$INORDER_ADMIN_TOKEN` (a token on
the command line shows in the process list). The tables need rich (the
`cli` extra); without it every command stops with a line naming
`pip install 'inorder[cli]'` (exit 2). `dashboard` serves the admin
endpoint's page over a cluster or a journal file (`_cli_dashboard.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

from supervisors.cluster._options import redact_url
from supervisors.observe._cli_dashboard import add_dashboard_arguments, serve_dashboard
from supervisors.observe._cli_targets import (
    FAILED,
    NOT_AUTHORIZED,
    OK,
    UNREACHABLE,
    USAGE,
    AdminClient,
    CliError,
    redis_error,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Sequence

    from supervisors.observe._source import Source

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: Final = {
    OK: "ok",
    FAILED: "a problem was found, or the operation failed (an unknown letter id, a server error)",
    USAGE: "usage error: bad arguments or URL, or a missing extra",
    UNREACHABLE: "the target cannot be reached or opened (refused, no answer, missing file, "
    "a file that is not a journal, a journal in use)",
    NOT_AUTHORIZED: "the target refused the credentials, or asked for some",
}

_EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())

_RATED = ("accepted", "handled", "failed", "interrupted", "dropped")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        self.exit(USAGE, f"inorder: {message} (see: {self.prog} --help)\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 86_400:
        raise argparse.ArgumentTypeError(f"seconds must be from 0 to 86400, got {text}")
    return value


def _targets(parser: argparse.ArgumentParser, *, journal: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--url", help="a runtime's admin endpoint, http://127.0.0.1:PORT")
    group.add_argument("--redis", metavar="URL", help="a cluster's Redis, redis://HOST:PORT/DB")
    if journal:
        group.add_argument("--journal", metavar="FILE", help="a stopped bot's journal file")
    parser.add_argument(
        "--token",
        default=os.environ.get("INORDER_ADMIN_TOKEN") or None,
        help="the admin endpoint's token (with --url; default: $INORDER_ADMIN_TOKEN)",
    )
    parser.add_argument("--prefix", default="inorder", help="the cluster's namespace (--redis)")
    parser.add_argument("--timeout", type=_seconds, default=5.0, help="seconds per request")


def build_parser() -> argparse.ArgumentParser:
    common: dict[str, Any] = {
        "formatter_class": argparse.RawDescriptionHelpFormatter,
        "epilog": _EPILOG,
    }
    parser = _Parser(
        prog="inorder", description="Look inside and operate inorder runtimes.", **common
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="a runtime's or a cluster's figures", **common)
    _targets(status, journal=False)
    status.add_argument("--json", action="store_true", help="JSON instead of tables")
    status.add_argument("--watch", type=_seconds, metavar="SECONDS", help="redraw until Ctrl-C")
    status.add_argument(
        "--sample",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="--url: seconds between the two reads the rates come from",
    )
    letters = commands.add_parser("dead-letters", help="list, redeliver or purge", **common)
    actions = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the dead letters kept", **common)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    again = actions.add_parser("redeliver", help="send letters to their keys again", **common)
    again.add_argument("ids", nargs="+", metavar="ID")
    purge = actions.add_parser("purge", help="forget letters", **common)
    purge.add_argument("ids", nargs="*", metavar="ID")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    for action in (listing, again, purge):
        _targets(action, journal=True)
    board = commands.add_parser("dashboard", help="serve the dashboard page", **common)
    add_dashboard_arguments(board)
    journal = commands.add_parser("journal", help="a journal file, offline", **common)
    tools = journal.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("check", "verify the file"),
        ("compact", "VACUUM, truncate the WAL"),
        ("export", "JSON lines of its contents"),
    ):
        tool = tools.add_parser(name, help=text, **common)
        tool.add_argument("file", metavar="FILE")
        if name == "export":
            tool.add_argument("--out", default="-", metavar="PATH", help="a file, or - (stdout)")
        else:
            tool.add_argument("--json", action="store_true", help="JSON instead of a table")
    return parser


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole lines (for grep): a wide console when it is no terminal.
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _print_json(value: Any, *, compact: bool = False) -> None:
    indent = None if compact else 2
    print(json.dumps(value, indent=indent, default=str), flush=True)


def _rates(before: dict[str, Any], after: dict[str, Any], elapsed: float) -> dict[str, float]:
    seconds = float(after.get("now", 0) or 0) - float(before.get("now", 0) or 0)
    seconds = seconds if seconds > 0 else elapsed
    if seconds <= 0:
        return dict.fromkeys(_RATED, 0.0)
    return {n: round((after.get(n, 0) - before.get(n, 0)) / seconds, 3) for n in _RATED}


@contextlib.asynccontextmanager
async def open_target(args: Any) -> AsyncIterator[Source]:
    """The `Source` that `--url`, `--redis` or `--journal` names, closed afterwards."""
    if getattr(args, "url", None):
        yield AdminClient(args.url, args.token, args.timeout)
        return
    if getattr(args, "redis", None):
        from supervisors.cluster._inspect import ClusterInspector

        try:
            inspector = ClusterInspector(args.redis, namespace=args.prefix, timeout=args.timeout)
        except ValueError as exc:  # the URL or the namespace (never the password)
            raise CliError(USAGE, f"--redis: {exc}") from None
        try:
            async with inspector:
                yield inspector
        except LookupError as exc:
            raise CliError(UNREACHABLE, f"{redact_url(args.redis)}: {exc}") from None
        except Exception as exc:
            translated = redis_error(exc, args.redis)
            if translated is None:
                raise
            raise translated from None
        return
    from supervisors.observe._cli_journal import JournalSource

    source = JournalSource(args.journal)
    try:
        yield source
    finally:
        source.close()


async def _status(args: argparse.Namespace) -> int:
    from rich.live import Live
    from rich.rule import Rule

    from supervisors.observe import _cli_render as render

    console = _console()
    live = None
    if args.watch and not args.json and console.is_terminal:
        live = Live(console=console, refresh_per_second=4)
        live.start()
    try:
        async with open_target(args) as source:
            previous: tuple[dict[str, Any], float] | None = None
            while True:
                began = time.monotonic()
                status = await source.status()
                if args.url and previous is None and not args.watch and args.sample:
                    previous = (status, began)
                    await asyncio.sleep(args.sample)
                    began = time.monotonic()
                    status = await source.status()
                if args.url:
                    status["rates"] = (
                        None
                        if previous is None
                        else _rates(previous[0], status, began - previous[1])
                    )
                if args.json:
                    _print_json(status, compact=bool(args.watch))
                else:
                    view = (
                        render.cluster_status(status)
                        if args.redis
                        else render.node_status(status, status["rates"])
                    )
                    if live is not None:
                        live.update(view)
                    else:
                        if args.watch:
                            console.print(Rule(time.strftime("%H:%M:%S")))
                        console.print(view)
                if not args.watch:
                    return OK
                previous = (status, began)
                await asyncio.sleep(args.watch)
    finally:
        if live is not None:
            live.stop()


async def _dead_letters(args: argparse.Namespace) -> int:
    if args.action == "purge" and bool(args.all) == bool(args.ids):
        raise CliError(USAGE, "dead-letters purge: give --all or the ids of the letters")
    async with open_target(args) as source:
        if args.action == "list":
            letters = await source.dead_letters()
            if args.json:
                _print_json(letters)
            else:
                from supervisors.observe._cli_render import letters_table

                _console().print(letters_table(letters))
            return OK
        if args.action == "purge":
            purged = await source.purge(None if args.all else list(args.ids))
            print(f"purged {purged} dead letter{'s' if purged != 1 else ''}", flush=True)
            if not args.all and purged < len(set(args.ids)):
                missing = len(set(args.ids)) - purged
                raise CliError(FAILED, f"{missing} of the ids named no dead letter kept")
            return OK
        unknown: list[str] = []
        for letter_id in args.ids:
            try:
                done = await source.redeliver(letter_id)
            except ValueError as exc:
                raise CliError(FAILED, str(exc)) from None
            if done:
                print(f"redelivered {letter_id}", flush=True)
            else:
                unknown.append(letter_id)
        if unknown:
            raise CliError(FAILED, "no dead letter kept with id " + ", ".join(unknown))
        return OK


async def _journal(args: argparse.Namespace) -> int:
    from supervisors.observe import _cli_journal as journal

    if args.action == "check":
        problems, report = journal.check(args.file)
        if args.json:
            _print_json({"ok": not problems, "problems": problems, **report})
        else:
            from supervisors.observe._cli_render import journal_report

            _console().print(journal_report(report, problems))
        if problems:
            raise CliError(FAILED, f"{args.file}: {problems[0]}")
        return OK
    if args.action == "compact":
        before, after = journal.compact(args.file)
        if args.json:
            _print_json({"file": args.file, "bytes_before": before, "bytes_after": after})
        else:
            print(f"{args.file}: {before} bytes before, {after} after", flush=True)
        return OK
    return _export(args, journal)


def _export(args: argparse.Namespace, journal: Any) -> int:
    counts: dict[str, int] = {}
    out = sys.stdout if args.out == "-" else None
    try:
        stream = out or open(args.out, "w", encoding="utf-8")  # noqa: SIM115 -- closed below
    except OSError as exc:
        raise CliError(UNREACHABLE, f"{args.out}: cannot write: {exc.strerror}") from None
    try:
        for row in journal.export_rows(args.file):
            stream.write(json.dumps(row, default=str) + "\n")
            counts[row["type"]] = counts.get(row["type"], 0) + 1
    finally:
        if out is None:
            stream.close()
    pending, letters, snapshots = (counts.get(t, 0) for t in ("pending", "dead_letter", "snapshot"))
    print(
        f"exported {pending} pending messages, {letters} dead letters, {snapshots} snapshots",
        file=sys.stderr,
    )
    return OK


async def _dashboard(args: argparse.Namespace) -> int:
    async with open_target(args) as source:
        return await serve_dashboard(source, args)


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]]] = {
    "dashboard": _dashboard,
    "status": _status,
    "dead-letters": _dead_letters,
    "journal": _journal,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (`EXIT_CODES`)."""
    args = build_parser().parse_args(argv)
    try:
        import rich.console  # noqa: F401 -- every command's output needs it
    except ImportError:
        print("inorder: the command line needs rich: pip install 'inorder[cli]'", file=sys.stderr)
        return USAGE
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except CliError as exc:
        print(f"inorder: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # the way to end --watch
        return OK if getattr(args, "watch", None) else 130
    except ImportError as exc:  # an optional extra (redis-py for --redis)
        print(f"inorder: {exc}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # piped into `head`: the reader has what it wanted
        sys.stdout = None  # no flush error at exit
        return OK
    except Exception as exc:  # never a traceback: one line, with what went wrong
        print(f"inorder: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED
