"""What the command line talks to: an admin endpoint, a cluster's Redis, a journal file.

`open_target` (supervisors/observe/_cli.py) turns `--url`, `--redis` or `--journal`
into a `Source` (supervisors/observe/_source.py) and closes it afterwards; every
way of failing to reach one becomes a `CliError`, one line with its exit code:

* `--url`: `AdminClient` speaks the admin endpoint's JSON API with urllib (no
  server library needed here). A refused connection, a timeout or an unknown
  host is `UNREACHABLE`; HTTP 401/403 is `NOT_AUTHORIZED`; a 404 on the API, or
  an answer that is not JSON, means no admin endpoint is there (`UNREACHABLE`);
  any other HTTP error is `FAILED`, with the server's own `error` if it gave one.
* `--redis`: a `ClusterInspector`; redis-py's errors are translated by
  `redis_error` (raised from inside the command's coroutine).
* `--journal`: a `JournalSource` (supervisors/observe/_cli_journal.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from supervisors.cluster._options import redact_url

__all__ = [
    "FAILED",
    "NOT_AUTHORIZED",
    "OK",
    "UNREACHABLE",
    "USAGE",
    "AdminClient",
    "CliError",
    "redis_error",
]

OK: Final = 0
FAILED: Final = 1  # a problem found, or the operation failed
USAGE: Final = 2  # bad arguments, a malformed URL, a missing extra
UNREACHABLE: Final = 3  # the target cannot be reached or opened
NOT_AUTHORIZED: Final = 4  # the target refused the credentials (or asked for some)


class CliError(Exception):
    """A failure the command line reports as one line on stderr, with its exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    """The `Source` of a runtime's admin endpoint, over HTTP (`--url`, `--token`)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"--url must be an http:// or https:// URL of an admin endpoint, got {url!r}"
            raise CliError(USAGE, msg)
        try:
            parts.port  # noqa: B018 -- a port that is not a number raises here
        except ValueError as exc:
            raise CliError(USAGE, f"--url has a bad port: {url!r} ({exc})") from exc
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<AdminClient {self.base}>"

    async def status(self) -> dict[str, Any]:
        answer = await self._call("GET", "/api/status")
        if not isinstance(answer, dict):
            raise CliError(UNREACHABLE, f"{self.base}: not an inorder admin endpoint")
        return answer

    async def dead_letters(self) -> list[dict[str, Any]]:
        answer = await self._call("GET", "/api/dead-letters")
        letters = answer.get("dead_letters") if isinstance(answer, dict) else None
        if not isinstance(letters, list):
            raise CliError(UNREACHABLE, f"{self.base}: not an inorder admin endpoint")
        return letters

    async def redeliver(self, letter_id: str) -> bool:
        path = f"/api/dead-letters/{urllib.parse.quote(letter_id, safe='')}/redeliver"
        try:
            await self._call("POST", path, {})
        except _NotFoundError:
            return False
        return True

    async def purge(self, ids: list[str] | None = None) -> int:
        answer = await self._call(
            "POST", "/api/dead-letters/purge", {} if ids is None else {"ids": ids}
        )
        return int(answer.get("purged", 0)) if isinstance(answer, dict) else 0

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self._request, method, path, body)

    def _request(self, method: str, path: str, body: Any) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        where = self.base
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, path) from None
        except urllib.error.URLError as exc:
            raise CliError(UNREACHABLE, f"{where}: {_reason(exc.reason, self.timeout)}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise CliError(UNREACHABLE, f"{where}: {_reason(exc, self.timeout)}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            msg = f"{where}: not an inorder admin endpoint (its answer to {path} is not JSON)"
            raise CliError(UNREACHABLE, msg) from None

    def _http_error(self, exc: urllib.error.HTTPError, path: str) -> Exception:
        detail = ""
        with contextlib.suppress(Exception):
            detail = str(json.loads(exc.read()).get("error") or "")
        where = self.base
        if exc.code in (401, 403):
            hint = "the token was refused" if self.token else "it needs a token: give --token"
            return CliError(NOT_AUTHORIZED, f"{where}: not authorized (HTTP {exc.code}): {hint}")
        if exc.code == 404 and path.endswith("/redeliver"):
            return _NotFoundError()
        if exc.code == 404:
            msg = f"{where}: no inorder admin endpoint there (HTTP 404 for {path})"
            return CliError(UNREACHABLE, msg)
        return CliError(
            FAILED, f"{where}: the server failed (HTTP {exc.code}){': ' + detail if detail else ''}"
        )


class _NotFoundError(Exception):
    pass


def _reason(reason: Any, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is a runtime serving its admin endpoint on that port?)"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror or reason})"
    if isinstance(reason, http.client.HTTPException | ConnectionResetError):
        return f"the connection broke ({type(reason).__name__}): not an HTTP admin endpoint?"
    return str(getattr(reason, "strerror", None) or reason)


def redis_error(exc: BaseException, url: str) -> CliError | None:
    """The `CliError` for one of redis-py's errors (None: not one of them)."""
    try:
        from redis import exceptions as errors
    except ImportError:
        return None
    where = redact_url(url)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, errors.AuthenticationError | errors.AuthorizationError) or (
        isinstance(exc, errors.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    ):
        return CliError(NOT_AUTHORIZED, f"{where}: Redis refused the credentials: {text}")
    if isinstance(exc, errors.TimeoutError):
        return CliError(UNREACHABLE, f"{where}: Redis did not answer in time")
    if isinstance(exc, errors.ConnectionError):
        return CliError(UNREACHABLE, f"{where}: cannot reach Redis: {text}")
    if isinstance(exc, errors.RedisError):
        return CliError(FAILED, f"{where}: Redis failed: {text}")
    return None
