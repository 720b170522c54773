"""Helpers shared by the test modules."""

from __future__ import annotations

from typing import Any

from supervisors import RestartPolicy


def policy(**overrides: Any) -> RestartPolicy:
    """A deterministic policy: 1 s, 2 s, 4 s, 5 s (cap) backoff, no jitter."""
    options: dict[str, Any] = {
        "max_restarts": 100,
        "within": 1000.0,
        "backoff_min": 1.0,
        "backoff_factor": 2.0,
        "backoff_max": 5.0,
        "jitter": 0.0,
        "reset_after": 1000.0,
    }
    options.update(overrides)
    return RestartPolicy(**options)
