"""How the library logs, without ever configuring structlog.

structlog's built-in default prints *every* level to stdout, which would flood
a chat backend with a million users. So:

* if the application has configured structlog (`structlog.configure`, or a
  test's `capture_logs`), the library logs through that configuration and the
  application's level filtering decides;
* if it has not, the library's logger filters at WARNING and writes to
  stderr: an unconfigured application sees warnings and errors only, and
  never on its stdout;
* `Runtime(log_level=logging.DEBUG)` (or any level) overrides both.

Whether DEBUG events of the message path (each handled message, each drop
the application asked for) are wanted is decided once, when a runtime starts,
so a filtered-out event costs one attribute check per message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["check_level", "debug_enabled", "library_logger"]

LOGGER_NAME = "inorder"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def check_level(level: Any) -> int | None:
    """Return `level` as a logging level number; raise `ValueError` for anything else.

    Accepts the logging module's five levels, as numbers (`logging.INFO`) or
    names (`"info"`, `"INFO"`), and `None` (the application decides).
    """
    if level is None:
        return None
    if isinstance(level, str) and level.lower() in _LEVELS:
        return _LEVELS[level.lower()]
    if not isinstance(level, bool) and isinstance(level, int) and level in _LEVELS.values():
        return level
    msg = (
        f"log_level must be one of logging.DEBUG, INFO, WARNING, ERROR, CRITICAL "
        f"(or their names), got {level!r}"
    )
    raise ValueError(msg)


def library_logger(level: int | None = None) -> Any:
    """Return the logger the runtime binds its context to.

    Unconfigured, structlog would print to stdout; a library's diagnostics
    belong on stderr, so the fallback writes there.
    """
    configured = structlog.is_configured()
    if configured and level is None:
        return structlog.get_logger(LOGGER_NAME)
    return structlog.wrap_logger(
        None if configured else structlog.PrintLogger(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.WARNING if level is None else level
        ),
        logger_factory_args=(LOGGER_NAME,),
    )


def debug_enabled(logger: Any) -> bool:
    """Whether DEBUG events of `logger` would be emitted (False when unknown)."""
    bound = logger.bind()  # resolve a lazy proxy into the configured wrapper
    is_enabled_for = getattr(bound, "is_enabled_for", None)
    if is_enabled_for is not None:
        return bool(is_enabled_for(logging.DEBUG))
    is_enabled = getattr(bound, "isEnabledFor", None)
    if is_enabled is not None:
        return bool(is_enabled(logging.DEBUG))
    return False
