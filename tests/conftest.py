"""Shared fixtures: virtual time, Redis, loop-error guard, structlog hygiene, hypothesis profile."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, settings

import actors
from actors.testing import FakeClock
from supervisors.testing import RedisServer, flush_database, redis_server_from_env

if os.environ.get("INORDER_EXPECT_COMPILED") and not actors.COMPILED:
    # `make pytest-compiled` must never pass by quietly testing the pure-Python sources.
    raise RuntimeError(f"expected the mypyc-compiled package, imported {actors.__file__}")


def pytest_report_header() -> str:
    kind = "compiled by mypyc" if actors.COMPILED else "pure Python"
    return f"inorder: {kind}, from {os.path.dirname(actors.__file__ or '')}"


settings.register_profile(
    "default",
    deadline=None,  # loop scheduling on a shared 2-core machine makes deadlines flaky
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: The few files of real-process chaos, crash, demo and benchmark runs: marked `slow`.
#: `make test` runs them on the first Python's compiled build and leaves them out of the
#: other suites (INORDER_SKIP_SLOW=1), which are there for what differs between versions
#: and builds (the language, the event loop, sqlite3, mypyc), not for minutes of kills.
SLOW_FILES = frozenset(
    {"test_cluster_chaos.py", "test_durable_crash.py", "test_demo_cluster.py", "test_benchmarks.py"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every async test fails on any error the loop reports (asyncpg's _testbase habit);
    the slow files are marked, and left out under INORDER_SKIP_SLOW=1."""
    skip_slow = os.environ.get("INORDER_SKIP_SLOW", "") not in ("", "0")
    kept, left_out = [], []
    for item in items:
        function = getattr(item, "obj", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.append("_loop_errors")  # type: ignore[attr-defined]
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
            if skip_slow:
                left_out.append(item)
                continue
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture
async def _loop_errors() -> Any:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)
    assert errors == [], f"the loop reported errors: {errors}"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    yield
    structlog.reset_defaults()


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis, started when a test first asks: INORDER_REDIS_URL's server if
    that is set, else an EmbeddedRedis (supervisors.testing), stopped after the last test.
    Shared: a test that stops, kills or restarts a server starts an EmbeddedRedis of its own."""
    with redis_server_from_env() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, its database emptied (FLUSHDB) before the test."""
    flush_database(redis_server.url)
    return redis_server.url
