"""inorder actors: the kernel (pykka on asyncio), the mailbox, the user actor, the registry.

Users subclass `UserActor`, implement `on_message(message, ctx)` and hand the
class to `supervisors.Runtime`. The errors below are what the runtime's calls
and ask futures raise.

A durable runtime stores what it accepted through a `Journal` (`SQLiteJournal`
is the embedded one), as bytes written by a `Codec`. A dead letter restored from
the journal after a restart carries a `RecordedError` in place of the exception.
Those live in `actors.journal`, a room of their own that needs nothing of the
runtime (only the kernel's errors): the kernel here never imports it, and this
package re-exports its names.

`COMPILED` tells whether the per-message path (mailbox, cell, router) runs
as C extensions built by mypyc, or as the identical pure-Python code.
"""

from actors import _cell
from actors._batch import Batch, Item
from actors._clock import Clock, LoopClock
from actors._errors import (
    AlreadyStarted,
    BlockingOnLoop,
    CodecError,
    Dropped,
    FutureTimeout,
    HandlerCrashed,
    HandlerTimeout,
    InorderError,
    Interrupted,
    InvalidKey,
    InvalidPriority,
    JournalClosed,
    JournalError,
    KeyBusy,
    MailboxFull,
    RecordedError,
    RetryAfter,
    RuntimeStopped,
    StopFromHandler,
)
from actors._future import LoopFuture
from actors._knobs import Debounce, Rate
from actors._outcomes import DeadLetter
from actors._user_actor import Context, UserActor
from actors.journal._codec import Codec, EnvelopeRecord
from actors.journal._seam import DeadLetterRecord, Journal, PendingRecord
from actors.journal._sqlite import SQLiteJournal

#: True when the per-message path was compiled by mypyc at install time (see setup.py).
COMPILED: bool = not _cell.__file__.endswith(".py")

__all__ = [
    "COMPILED",
    "AlreadyStarted",
    "Batch",
    "BlockingOnLoop",
    "Clock",
    "Codec",
    "CodecError",
    "Context",
    "DeadLetter",
    "DeadLetterRecord",
    "Debounce",
    "Dropped",
    "EnvelopeRecord",
    "FutureTimeout",
    "HandlerCrashed",
    "HandlerTimeout",
    "InorderError",
    "Interrupted",
    "InvalidKey",
    "InvalidPriority",
    "Item",
    "Journal",
    "JournalClosed",
    "JournalError",
    "KeyBusy",
    "LoopClock",
    "LoopFuture",
    "MailboxFull",
    "PendingRecord",
    "Rate",
    "RecordedError",
    "RetryAfter",
    "RuntimeStopped",
    "SQLiteJournal",
    "StopFromHandler",
    "UserActor",
]
