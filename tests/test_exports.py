"""The public surface is what the contract says, and nothing private leaks into it."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["actors", "supervisors"])
def test_all_is_sorted_and_resolves(name: str) -> None:
    """__all__ is sorted (constants, then classes, then functions: ruff's RUF022),
    every name resolves, and none is private."""
    module = importlib.import_module(name)

    def kind(attr: str) -> tuple[int, str]:
        return (0 if attr.isupper() else 1 if attr[:1].isupper() else 2, attr)

    assert list(module.__all__) == sorted(module.__all__, key=kind)
    for attr in module.__all__:
        assert not attr.startswith("_")
        assert getattr(module, attr) is not None


def test_contract_names() -> None:
    """The names acceptance tests import exist where the contract puts them."""
    from actors import (  # noqa: F401
        Context,
        Dropped,
        Interrupted,
        MailboxFull,
        RuntimeStopped,
        UserActor,
    )
    from supervisors import RestartPolicy, Runtime  # noqa: F401


def test_one_error_hierarchy() -> None:
    """Every error the library raises on purpose derives from InorderError."""
    import actors

    for name in ("Dropped", "Interrupted", "MailboxFull", "RuntimeStopped", "InvalidKey",
                 "InvalidPriority", "HandlerTimeout", "BlockingOnLoop", "HandlerCrashed",
                 "FutureTimeout", "CodecError"):
        assert issubclass(getattr(actors, name), actors.InorderError)
    assert issubclass(actors.InvalidKey, ValueError)
    assert issubclass(actors.HandlerTimeout, TimeoutError)
    assert issubclass(actors.FutureTimeout, TimeoutError)
    assert issubclass(actors.CodecError, ValueError)
