"""How the library logs, without ever configuring structlog.

structlog's built-in default prints *every* level to stdout, which would flood
a chat backend with a million users. So:

* if the application has configured structlog (`structlog.configure`, or a
  test's `capture_logs`), the library logs through that configuration and the
  application's level filtering decides;
* if it has not, the library's logger filters at WARNING: an unconfigured
  application sees warnings and errors only;
* `Runtime(log_level=logging.DEBUG)` (or any level) overrides both.

Whether DEBUG events of the message path (each handled message, each drop
the application asked for) are wanted is decided once, when a runtime starts,
so a filtered-out event costs one attribute check per message.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["debug_enabled", "library_logger"]

LOGGER_NAME = "inorder"


def library_logger(level: int | None = None) -> Any:
    """Return the logger the runtime binds its context to."""
    if level is not None:
        return structlog.wrap_logger(
            None,
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory_args=(LOGGER_NAME,),
        )
    if structlog.is_configured():
        return structlog.get_logger(LOGGER_NAME)
    return structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
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
