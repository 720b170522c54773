"""What every framework adapter shares: one runtime wired into a framework's app.

A `Bridge` owns the `Runtime` it builds (with the user's actor class and options),
and does the three things every adapter needs on each update:

1. `route(update, key, msg_id, command)`: an update whose key is None is left to
   the framework (logged as `adapter_update_skipped` at DEBUG); a command named in
   `interrupts` or `clears` goes on the control lane (`priority`, `interrupt=True`
   and/or `clear=True`); anything else is sent as a normal message with the
   platform's update id as `msg_id`. It awaits `Runtime.send`, so the framework's
   handler returns once the update is accepted (durable with a store), and a full
   mailbox slows the framework down instead of losing the update; what `send`
   raises (`KeyBusy`, `MailboxFull`, `RuntimeStopped`) reaches the framework's own
   error handling.
2. `start()`/`stop()`, called from the framework's lifecycle hooks (or `async
   with bridge:`), each idempotent.
3. `register(cls, encode, decode)`: the framework's update class goes into the
   runtime's codec, so a durable journal or a cluster stream carries it as the
   platform's raw JSON and gives back the framework's object.

The platform's rate-limit errors become `RetryAfter` in `with_platform_errors`:
the actor class is subclassed once, with an `on_message` that translates.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from actors._errors import RetryAfter
from actors._logging import check_level, library_logger
from actors._user_actor import HANDLER_ASYNC, UserActor
from actors.journal._codec import Codec
from supervisors._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Callable, Collection
    from types import TracebackType

    from supervisors._runtime import ShutdownSummary

__all__ = ["DEFAULT_PRIORITY", "Bridge", "check_commands", "with_platform_errors"]

T = TypeVar("T")

#: The priority of the commands the bridge sends on the control lane.
DEFAULT_PRIORITY: Final = 10

_COMMAND: Final = re.compile(r"[A-Za-z0-9_]{1,32}")


def check_commands(names: Collection[str], what: str) -> frozenset[str]:
    """Return the command names without a leading "/", or raise `ValueError`."""
    if isinstance(names, str):
        msg = f"{what} takes a collection of command names, not the str {names!r}"
        raise TypeError(msg)
    found = set()
    for name in names:
        if not isinstance(name, str) or not _COMMAND.fullmatch(name.removeprefix("/")):
            msg = f"{what}: a command is 1 to 32 letters, digits or _ (a / may lead), got {name!r}"
            raise ValueError(msg)
        found.add(name.removeprefix("/").lower())
    return frozenset(found)


def with_platform_errors(
    factory: Callable[[str | int], UserActor],
    translate: Callable[[BaseException], float | None],
) -> Callable[[str | int], UserActor]:
    """The factory whose actors raise `RetryAfter` where the platform said "too many".

    `translate(error)` returns the seconds to wait for a platform's rate-limit error
    and None for any other. A `UserActor` class is subclassed once (same name, same
    knobs), so the runtime still reads its class attributes up front; another
    factory's actors get that subclass of their own class at creation.
    """
    if isinstance(factory, type) and issubclass(factory, UserActor):
        return _translating(factory, translate)
    build: Callable[[str | int], Any] = factory
    made: dict[type[UserActor], type[UserActor]] = {}

    def make(key: str | int) -> Any:
        actor = build(key)
        if isinstance(actor, UserActor) and type(actor) is not UserActor:
            cls = type(actor)
            sub = made.get(cls)
            if sub is None:
                sub = made[cls] = _translating(cls, translate)
            # The same layout (the subclass adds no slot), so retyping is safe.
            actor.__class__ = sub
        return actor  # anything else: the runtime refuses it as it would unwrapped

    return make


def _translating(
    cls: type[UserActor], translate: Callable[[BaseException], float | None]
) -> type[UserActor]:
    handle = cls.on_message
    namespace: dict[str, Any]
    if cls._handler_mode == HANDLER_ASYNC:

        async def on_message_async(self: UserActor, message: Any, ctx: Any) -> Any:
            try:
                return await handle(self, message, ctx)
            except Exception as error:
                _translated(error, translate)
                raise

        namespace = {"on_message": on_message_async}
    else:

        def on_message(self: UserActor, message: Any, ctx: Any) -> Any:
            try:
                return handle(self, message, ctx)
            except Exception as error:
                _translated(error, translate)
                raise

        namespace = {"on_message": on_message}
    namespace.update(__module__=cls.__module__, __qualname__=cls.__qualname__, __doc__=cls.__doc__)
    made: type[UserActor] = type(cls.__name__, (cls,), namespace)
    return made


def _translated(error: Exception, translate: Callable[[BaseException], float | None]) -> None:
    """Raise `RetryAfter` from `error` if the platform asked to wait; else return."""
    if isinstance(error, RetryAfter):
        return  # inorder's own: as it is
    seconds = translate(error)
    if seconds is not None:
        raise RetryAfter(seconds) from error


class Bridge:
    """One runtime fed by one framework application; see the module's docstring.

    Adapters build it; users get it back from the adapter's `inorder_for(...)` and
    use `bridge.runtime` for everything else (`stats()`, `ask`, `dead_letters()`).
    """

    def __init__(
        self,
        factory: Callable[[str | int], UserActor],
        *,
        platform: str,
        translate: Callable[[BaseException], float | None],
        interrupts: Collection[str] = ("stop", "cancel"),
        clears: Collection[str] = (),
        priority: int = DEFAULT_PRIORITY,
        send_timeout: float | None = 30.0,
        drain: bool = True,
        stop_timeout: float = 10.0,
        runtime_options: dict[str, Any],
    ) -> None:
        stops = check_commands(interrupts, "interrupts")
        clearing = check_commands(clears, "clears")
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
            msg = f"priority must be an int >= 1 (the control lane), got {priority!r}"
            raise ValueError(msg)
        for name, value in (("send_timeout", send_timeout), ("stop_timeout", stop_timeout)):
            if value is None and name == "send_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                msg = f"{name} must be a number of seconds > 0, got {value!r}"
                raise ValueError(msg)
        if not isinstance(drain, bool):
            msg = f"drain must be a bool, got {drain!r}"
            raise TypeError(msg)
        codec = runtime_options.pop("codec", None)
        self.codec: Codec = codec if codec is not None else Codec()
        self.platform = platform
        self.priority = priority
        self.commands: dict[str, tuple[bool, bool]] = {
            name: (name in stops, name in clearing) for name in stops | clearing
        }
        self._send_timeout = send_timeout
        self._drain = drain
        self._stop_timeout = stop_timeout
        level = check_level(runtime_options.get("log_level"))  # "debug" as the Runtime takes it
        self._log = library_logger(level).bind(platform=platform)
        self.runtime = Runtime(
            with_platform_errors(factory, translate), codec=self.codec, **runtime_options
        )
        self._started = False
        self._summary: ShutdownSummary | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.platform} {self.runtime!r}>"

    def register(
        self, cls: type[T], *, tag: str, encode: Callable[[T], Any], decode: Callable[[Any], T]
    ) -> None:
        """Put the framework's update class into the codec, unless the user already did."""
        if not self.codec.registered(cls):
            self.codec.register(cls, tag=tag, encode=encode, decode=decode)

    # -- per update ------------------------------------------------------------------

    async def route(
        self, update: Any, key: str | None, msg_id: str | None, command: str | None
    ) -> bool:
        """Send `update` to `key`'s actor; False (and nothing sent) if `key` is None."""
        if key is None:
            self._log.debug("adapter_update_skipped", kind=type(update).__name__)
            return False
        lane = self.commands.get(command.lower()) if command is not None else None
        if lane is None:
            await self.runtime.send(key, update, msg_id=msg_id, timeout=self._send_timeout)
        else:
            interrupt, clear = lane
            await self.runtime.send(
                key,
                update,
                priority=self.priority,
                interrupt=interrupt,
                clear=clear,
                msg_id=msg_id,
                timeout=self._send_timeout,
            )
        return True

    # -- the lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the runtime has started and not begun to stop."""
        return bool(self.runtime.stats()["state"] == "running")

    async def start(self) -> None:
        """Start the runtime on the running loop; a second call does nothing."""
        if self._started:
            return
        self._started = True
        await self.runtime.start()

    async def stop(self) -> ShutdownSummary | None:
        """Stop the runtime (drain, then stop); None if it never started. Idempotent."""
        if not self._started:
            return None
        if self._summary is None:
            self._summary = await self.runtime.stop(drain=self._drain, timeout=self._stop_timeout)
        return self._summary

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
