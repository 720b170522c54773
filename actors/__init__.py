"""inorder actors: the kernel (pykka on asyncio), the mailbox, the user actor, the registry.

Users subclass `UserActor`, implement `on_message(message, ctx)` and hand the
class to `supervisors.Runtime`. The errors below are what the runtime's calls
and ask futures raise.
"""

from actors._clock import Clock, LoopClock
from actors._errors import (
    BlockingOnLoop,
    Dropped,
    HandlerTimeout,
    InorderError,
    Interrupted,
    InvalidKey,
    InvalidPriority,
    MailboxFull,
    RuntimeStopped,
)
from actors._future import LoopFuture
from actors._outcomes import DeadLetter
from actors._user_actor import Context, UserActor

__all__ = [
    "BlockingOnLoop",
    "Clock",
    "Context",
    "DeadLetter",
    "Dropped",
    "HandlerTimeout",
    "InorderError",
    "Interrupted",
    "InvalidKey",
    "InvalidPriority",
    "LoopClock",
    "LoopFuture",
    "MailboxFull",
    "RuntimeStopped",
    "UserActor",
]
