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
        AlreadyStarted,
        Context,
        Dropped,
        Interrupted,
        MailboxFull,
        RuntimeStopped,
        StopFromHandler,
        UserActor,
    )
    from supervisors import RestartPolicy, Runtime  # noqa: F401


def test_one_error_hierarchy() -> None:
    """Every error the library raises on purpose derives from InorderError."""
    import actors

    for name in ("Dropped", "Interrupted", "MailboxFull", "RuntimeStopped", "InvalidKey",
                 "InvalidPriority", "HandlerTimeout", "BlockingOnLoop", "HandlerCrashed",
                 "FutureTimeout", "CodecError", "JournalError", "JournalClosed",
                 "RecordedError", "AlreadyStarted", "StopFromHandler"):
        assert issubclass(getattr(actors, name), actors.InorderError)
    assert issubclass(actors.InvalidKey, ValueError)
    assert issubclass(actors.HandlerTimeout, TimeoutError)
    assert issubclass(actors.FutureTimeout, TimeoutError)
    assert issubclass(actors.CodecError, ValueError)
    assert issubclass(actors.JournalClosed, actors.JournalError)
    assert issubclass(actors.JournalClosed, RuntimeError)
    for name in ("RuntimeStopped", "AlreadyStarted", "StopFromHandler", "BlockingOnLoop"):
        assert issubclass(getattr(actors, name), RuntimeError)
    # A second start is misuse, not a call on a stopped runtime: a class of its own.
    assert not issubclass(actors.AlreadyStarted, actors.RuntimeStopped)


def test_every_exported_error_is_defined_in_one_module() -> None:
    """The error hierarchy lives in actors._errors: an error exported from the package
    is that module's class, not a copy defined next to the code that raises it."""
    import actors
    from actors import _errors

    errors = [n for n in actors.__all__ if isinstance(getattr(actors, n), type)
              and issubclass(getattr(actors, n), BaseException)]
    assert set(errors) == set(_errors.__all__)
    for name in errors:
        assert getattr(actors, name) is getattr(_errors, name)
        assert getattr(actors, name).__module__ == "actors._errors"


def test_journal_names() -> None:
    """The journal seam, its embedded implementation and its records are exported."""
    from actors import (
        DeadLetterRecord,
        Journal,
        PendingRecord,
        SQLiteJournal,
    )

    assert Journal.__module__ == "actors._journal"
    assert SQLiteJournal.__module__ == "actors._sqlite_journal"
    assert {DeadLetterRecord.__module__, PendingRecord.__module__} == {"actors._journal"}
    # The implementation has every method of the seam.
    seam = {n for n in vars(Journal) if not n.startswith("_")}
    assert seam <= set(dir(SQLiteJournal))


def test_recorded_error() -> None:
    """What a dead letter restored after a restart carries instead of the exception."""
    import copy
    import pickle

    from actors import RecordedError

    err = RecordedError("ValueError", "bad input")
    assert (err.type_name, err.text) == ("ValueError", "bad input")
    assert str(err) == "ValueError: bad input"
    assert str(RecordedError("KeyError", "")) == "KeyError"
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert (again.type_name, again.text, str(again)) == (err.type_name, err.text, str(err))

    class Local(Exception):
        pass

    of = RecordedError.of(Local("boom"))
    assert (of.type_name, of.text) == ("test_recorded_error.<locals>.Local", "boom")
    assert str(RecordedError.of(KeyboardInterrupt())) == "KeyboardInterrupt"
    assert str(RecordedError.of(err)) == "ValueError: bad input"  # not "RecordedError: ..."

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    unprintable = RecordedError.of(Unprintable())
    assert unprintable.text == "<unprintable test_recorded_error.<locals>.Unprintable>"
