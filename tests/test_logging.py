"""Logging: events as data, quiet by default, never configured by the library."""

from __future__ import annotations

import ast
import asyncio
import logging
import pathlib
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from actors import Context, UserActor
from supervisors import RestartPolicy, Runtime

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Bot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "boom":
            raise ValueError("boom")
        return message


class TestEvents:
    async def test_lifecycle_and_message_events_are_emitted_as_data(self) -> None:
        """With structlog configured (here by capture_logs), debug events carry bound context."""
        with capture_logs() as logs:
            async with Runtime(Bot, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
                await rt.ask("telegram:1", "hi")
                with pytest.raises(ValueError, match="boom"):
                    await rt.ask("telegram:1", "boom")
                await rt.wait_idle()

        events = [e["event"] for e in logs]
        for name in (
            "runtime_started",
            "actor_started",
            "message_handled",
            "actor_failed",
            "actor_restart_scheduled",
            "actor_restarted",
            "message_dead_lettered",
            "runtime_stopped",
        ):
            assert name in events, name
        handled = next(e for e in logs if e["event"] == "message_handled")
        assert handled["key"] == "telegram:1"
        assert handled["log_level"] == "debug"
        assert {"wait_ms", "run_ms", "priority", "depth"} <= set(handled)
        failed = next(e for e in logs if e["event"] == "actor_failed")
        assert failed["log_level"] == "warning"
        assert failed["phase"] == "on_message"
        scheduled = next(e for e in logs if e["event"] == "actor_restart_scheduled")
        assert scheduled["log_level"] == "info"

    async def test_failure_reaching_no_caller_is_an_error(self) -> None:
        """A told message that fails is logged at ERROR (no caller will ever see it)."""
        with capture_logs() as logs:
            async with Runtime(Bot, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
                rt.tell("k", "boom")
                await rt.wait_idle()

        [failed] = [e for e in logs if e["event"] == "message_failed"]
        assert failed["log_level"] == "error"
        assert failed["key"] == "k"

    async def test_log_level_option_filters(self) -> None:
        """Runtime(log_level=WARNING) drops debug and info events even when configured."""
        with capture_logs() as logs:
            async with Runtime(Bot, log_level=logging.WARNING) as rt:
                await rt.ask("k", 1)

        assert [e for e in logs if e["log_level"] in ("debug", "info")] == []


class TestQuietByDefault:
    async def test_unconfigured_structlog_sees_warnings_only(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without structlog configuration nothing below WARNING is printed."""
        structlog.reset_defaults()
        assert not structlog.is_configured()
        async with Runtime(Bot) as rt:
            for i in range(20):
                await rt.ask("k", i)
        await asyncio.sleep(0)

        assert capsys.readouterr().out == ""

    async def test_filtered_out_per_message_events_are_skipped_entirely(self) -> None:
        """The per-message event is guarded by one flag decided at start, not per message."""
        structlog.reset_defaults()
        async with Runtime(Bot) as rt:
            assert rt._core is not None
            assert rt._core.trace is False

    def test_the_library_never_configures_structlog(self) -> None:
        """No call to structlog.configure in actors/ or supervisors/."""
        offenders = []
        for package in ("actors", "supervisors"):
            for path in (ROOT / package).rglob("*.py"):
                tree = ast.parse(path.read_text())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and node.attr in (
                        "configure",
                        "configure_once",
                    ):
                        offenders.append(f"{path.name}:{node.lineno}")

        assert offenders == []
