"""The one error hierarchy of inorder.

Every exception the library raises on purpose derives from `InorderError`, so
`except InorderError` catches all of them; each also derives from the built-in
exception a caller would naturally expect (`ValueError` for bad input,
`TimeoutError` for timeouts, `RuntimeError` for misuse).

The four outcome errors (`MailboxFull`, `Interrupted`, `Dropped`,
`RuntimeStopped`) keep the short names of the public contract.
"""

from __future__ import annotations

from typing import Any

import pykka

__all__ = [
    "AlreadyStarted",
    "BlockingOnLoop",
    "CodecError",
    "Dropped",
    "FutureTimeout",
    "HandlerCrashed",
    "HandlerTimeout",
    "InorderError",
    "Interrupted",
    "InvalidKey",
    "InvalidPriority",
    "JournalClosed",
    "JournalError",
    "KeyBusy",
    "MailboxFull",
    "RecordedError",
    "RetryAfter",
    "RuntimeStopped",
    "StopFromHandler",
]


class InorderError(Exception):
    """Base class of every error raised by inorder."""


class InvalidKey(InorderError, ValueError):
    """Raised at the call site when a user key is empty, `None`, a `bool` or not `str`/`int`."""

    def __init__(self, key: Any) -> None:
        super().__init__(
            f"invalid user key {key!r}: a key is a non-empty str or an int "
            f"(got {type(key).__name__})"
        )
        self.key = key


class InvalidPriority(InorderError, ValueError):
    """Raised at the call site when a priority is not an `int` >= 0.

    Also when `interrupt=True` comes with priority 0: a handler in flight is
    interrupted only by a higher priority, and 0 is the lowest, so that
    interrupt could never take effect (`reason` says so).
    """

    def __init__(self, priority: Any, reason: str = "a priority is an int >= 0") -> None:
        super().__init__(f"invalid priority {priority!r}: {reason}")
        self.priority = priority


class MailboxFull(InorderError):
    """Raised by `tell`/`ask` when the key's mailbox already holds `max_pending` messages.

    Nothing was enqueued: the caller still owns the message.
    """

    def __init__(self, key: Any, limit: int, *, scope: str = "key") -> None:
        what = {
            "key": "mailbox of",
            "cluster": "cluster outbox (Redis unreachable?), at",
        }.get(scope, "runtime-wide pending bound, at")
        super().__init__(f"{what} {key!r} is full ({limit} waiting messages)")
        self.key = key
        self.limit = limit
        self.scope = scope


class KeyBusy(InorderError):
    """Raised by `tell`/`ask` for a key whose class (or runtime) says `busy="reject"`:
    its handler is running, or messages of it wait. Nothing was enqueued.

    Priority messages are never refused this way (the control lane): a bot answers
    "wait, or /stop" and the `/stop` still gets through.
    """

    def __init__(self, key: Any) -> None:
        super().__init__(f"{key!r} is busy: its handler is running (busy='reject')")
        self.key = key


class RetryAfter(InorderError):
    """Raise it from a handler to run the same message again after `seconds`.

    The key pauses for that long (its other messages wait; every other key goes on)
    and the message runs again. Not a failure: it consumes neither the restart
    budget nor `max_retries`. For a platform's flood control: Telegram's
    `RetryAfter`, Discord's 429 (`ctx.retry_after(seconds)` raises it too).
    """

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < float("inf")
        ):
            msg = f"RetryAfter takes a number of seconds >= 0, got {seconds!r}"
            raise ValueError(msg)
        super().__init__(f"retry after {seconds} s")
        self.seconds = float(seconds)


class Interrupted(InorderError):
    """Raised by an ask future whose handler was cancelled by an interrupting message.

    Also the outcome of a message still in flight when `Runtime.stop` gives up
    waiting for it.
    """

    def __init__(self, key: Any, reason: str = "interrupt") -> None:
        super().__init__(f"handler for {key!r} was interrupted ({reason})")
        self.key = key
        self.reason = reason


class CodecError(InorderError, ValueError):
    """Raised when a value cannot be encoded, or bytes cannot be decoded, by a `Codec`.

    At encode: a value of an unsupported or unregistered type (the message names
    the type and where it sits, e.g. `value['items'][2].tags`), an int outside
    64 bits, a naive datetime, nesting deeper than `MAX_DEPTH`, an encoded size
    over `max_size`, or a registered encoder that raised. At decode: bytes that
    are not entirely one value this codec wrote (random, truncated, trailing
    data, a foreign extension), an unknown tag, an envelope of another format
    version, or a registered decoder that raised. At registration: a bad or
    duplicate tag, a class registered twice, a class that needs functions.
    Nothing was stored or returned.
    """


class Dropped(InorderError):
    """Raised by an ask future whose message was dropped without being handled.

    `reason` says why: `"cleared"`, `"shutdown"`, `"stopped"`, `"gave_up"`,
    `"parked"`, `"expired"`, `"withdrawn"`, ... When a failure caused the drop
    (the key was stopped, or its restarts gave up), `cause` (and `__cause__`)
    is that failure.
    """

    def __init__(self, key: Any, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(f"message for {key!r} was dropped ({reason})")
        self.key = key
        self.reason = reason
        self.cause = cause
        self.__cause__ = cause


class HandlerCrashed(InorderError):
    """Raised by an ask future whose handler raised something that is not an `Exception`.

    A `BaseException` that is not an `Exception` (`SystemExit`, `KeyboardInterrupt`,
    `GeneratorExit`, a class of your own), or a `CancelledError` that the runtime
    did not request, is a failure of that key like any other; but raised as is
    in the asker's task it would end that task, or the whole loop. So the asker
    gets this wrapper; `error` (and `__cause__`) is the original, which is also
    what the decider and the dead letter see.
    """

    def __init__(self, key: Any, error: BaseException) -> None:
        super().__init__(f"handler for {key!r} raised {error!r}")
        self.key = key
        self.error = error
        self.__cause__ = error


class RuntimeStopped(InorderError, RuntimeError):
    """Raised by calls on a runtime that is not running (not started yet, stopping or stopped)."""


class AlreadyStarted(InorderError, RuntimeError):
    """Raised by a second `start()` (or `async with`, `with`) of a runtime.

    A runtime starts once: while it runs, use it; once it has stopped, create a
    new `Runtime`. The message says which of the two it is.
    """


class StopFromHandler(InorderError, RuntimeError):
    """Raised by waiting for `Runtime.stop()` inside one of that runtime's handlers or hooks.

    The stop waits for every handler (and `on_stop`) of the runtime to return,
    that one included, so the wait would wait for itself: `await rt.stop()` in
    an async handler, `rt.stop().get()` in a blocking one. Call `rt.stop()`
    without waiting: the stop begins all the same, and the handler's own turn
    is part of its drain. Raised at the wait, not at `stop()`.
    """


class BlockingOnLoop(InorderError, RuntimeError):
    """Raised by `Future.get()` called on the event loop thread.

    Blocking there would deadlock: the loop that must produce the value is the
    one being blocked. Use `await future` instead.
    """


class FutureTimeout(InorderError, pykka.Timeout, TimeoutError):
    """Raised by `LoopFuture.get(timeout=...)` when the value did not arrive in time.

    Also a `TimeoutError` and, for code written against pykka, a `pykka.Timeout`.
    """


class HandlerTimeout(InorderError, TimeoutError):
    """The failure of a handler that ran longer than `RestartPolicy.handler_timeout`."""

    def __init__(self, key: Any, timeout: float) -> None:
        super().__init__(f"handler for {key!r} ran longer than {timeout} s")
        self.key = key
        self.timeout = timeout


class JournalError(InorderError):
    """A journal cannot be opened or written.

    At open: the file is not a journal this version of inorder reads (not SQLite,
    corrupted, truncated, another SQLite database, another schema version). The
    message names the file and the recovery path: move the file (with its `-wal`
    and `-shm` companions) aside and start with a new journal, losing the messages
    it held that were not handled yet, the actor snapshots and the dead letters; or
    salvage them from the copy (`sqlite3 copy.db .recover`) first.

    While running: a transaction failed (disk full, an I/O error); the futures of
    its operations fail with this error, and so does every later call.
    """


class JournalClosed(JournalError, RuntimeError):
    """Raised by every call on a journal after `close()`."""


class RecordedError(InorderError):
    """An error recorded before a restart, standing in for the exception object.

    A dead letter restored from the journal after a restart cannot carry the
    exception that made it (nothing is ever pickled, and the class may not even
    exist any more), so it carries this instead: `type_name`, the qualified name
    of the exception's class, and `text`, what `str()` gave for it. `str()` of a
    `RecordedError` is `"type_name: text"`, or `type_name` alone when `text` is
    empty. It is never raised by the library, only handed over in its place.
    """

    def __init__(self, type_name: str, text: str) -> None:
        # Both go to `args`, so that copying or pickling one rebuilds it as it was.
        super().__init__(type_name, text)
        self.type_name = type_name
        self.text = text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.text}" if self.text else self.type_name

    @classmethod
    def of(cls, error: BaseException) -> RecordedError:
        """Record `error`: its class's qualified name and its `str()`.

        A `RecordedError` is recorded as the error it stands for (its own
        `type_name` and `text`), so an error restored twice keeps its original
        name. When `str(error)` itself raises, the text says so instead.
        """
        if isinstance(error, RecordedError):
            return cls(error.type_name, error.text)
        type_name = type(error).__qualname__
        try:
            text = str(error)
        except Exception:  # a broken __str__ must not fail the path that records it
            text = f"<unprintable {type_name}>"
        return cls(type_name, text)
