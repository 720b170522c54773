"""The peers: per-user designs that chat backends write by hand.

Each one follows a design from the documents inorder was designed from
(DESIGN.md section 1) and implements the same small interface, :class:`Peer`,
so that every scenario can run the runtime and the peers under one workload:

* :class:`AsyncioQueuePeer` (``asyncio-queue``): an ``asyncio.Queue`` and a
  worker task per user, as in the Telegram bot design and
  microsoft/agent-framework PR #5643; priority through ``asyncio.PriorityQueue``,
  interrupt by cancelling the worker while it runs a handler, idle shutdown
  with a timeout on ``get``.
* :class:`PromiseQueuePeer` (``promise-queue``): a per-user list with a
  ``processing`` flag where every enqueue returns a future, after the Node
  per-user promise queue; its per-user state is dropped once drained.
* :class:`LockPeer` (``lock-per-user``): a task per message serialised by a
  per-user ``asyncio.Lock`` (aiogram's ``SimpleEventIsolation``,
  chatgpt_telegram_bot); interrupt cancels the task holding the lock, as its
  ``/cancel`` does; locks are reference counted and dropped when unused.
* ``pykka-thread`` (in :mod:`benchmarks._pykka_peer`) and the runtime itself
  (``inorder``, in :mod:`benchmarks._runtime_peer`) implement the same interface.

A peer that lacks a capability a scenario needs is reported as
``n/a (no <capability>)`` rather than left out.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, ClassVar

Key = Hashable
#: An async handler ``handler(key, message) -> result``: what a user writes.
Handler = Callable[[Any, Any], Awaitable[Any]]
#: The same handler as a plain function, for peers that run it in a thread.
SyncHandler = Callable[[Any, Any], Any]

PRIORITY = "priority"
INTERRUPT = "interrupt"
IDLE = "idle shutdown"


class PeerInterrupted(Exception):
    """The ask future of a message whose handler was interrupted."""


class Peer(abc.ABC):
    """Common interface of the runtime and the peers.

    ``tell`` enqueues and returns at once; ``ask`` returns an awaitable that
    resolves to the handler's return value; ``close`` releases everything.
    Optional capabilities are listed in ``capabilities``; ``max_users`` bounds
    the sizes a peer is run at (``None``: no bound).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    max_users: ClassVar[int | None] = None

    def __init__(
        self,
        handler: Handler,
        *,
        sync_handler: SyncHandler | None = None,
        idle_timeout: float | None = None,
        priority: bool = False,
    ) -> None:
        self._handler = handler
        self._sync_handler = sync_handler
        self._idle = idle_timeout
        self._priority = priority
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def missing(cls, *needs: str, users: int | None = None) -> str | None:
        """Why this peer cannot run a scenario, as ``"n/a (...)"``, else None."""
        for need in needs:
            if need not in cls.capabilities:
                return f"n/a (no {need})"
        if users is not None and cls.max_users is not None and users > cls.max_users:
            return f"n/a (threads: > {cls.max_users:,} users)"
        return None

    async def start(self) -> None:
        """Bind to the running loop; subclasses start their machinery here."""
        self._loop = asyncio.get_running_loop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() first"
        return self._loop

    @abc.abstractmethod
    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        """Enqueue ``message`` for ``key``; never waits for the handler."""

    @abc.abstractmethod
    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> Awaitable[Any]:
        """Enqueue ``message`` and return an awaitable of the handler's result."""

    def tell_threadsafe(self, key: Key, message: Any) -> None:
        """``tell`` from a thread that is not the loop's: one hand-off per message."""
        self.loop.call_soon_threadsafe(self.tell, key, message)

    @abc.abstractmethod
    def live(self) -> int:
        """How many users currently hold per-user state (actors, queues, locks)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every worker and release all per-user state."""

    async def __aenter__(self) -> Peer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _resolve(fut: asyncio.Future[Any] | None, result: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


class _QueueUser:
    __slots__ = ("busy", "interrupting", "queue", "task")

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.interrupting = False


class AsyncioQueuePeer(Peer):
    """An ``asyncio.Queue`` and a worker task per user."""

    name = "asyncio-queue"
    description = "asyncio.Queue + worker task per user"
    capabilities = frozenset({PRIORITY, INTERRUPT, IDLE})

    def __init__(self, handler: Handler, **options: Any) -> None:
        super().__init__(handler, **options)
        self._users: dict[Key, _QueueUser] = {}
        self._seq = 0

    def _spawn(self, key: Key) -> _QueueUser:
        queue: asyncio.Queue[Any] = asyncio.PriorityQueue() if self._priority else asyncio.Queue()
        user = self._users[key] = _QueueUser(queue)
        user.task = self.loop.create_task(self._work(key, user))
        return user

    def _put(
        self,
        key: Key,
        message: Any,
        fut: asyncio.Future[Any] | None,
        priority: int,
        interrupt: bool,
    ) -> None:
        user = self._users.get(key) or self._spawn(key)
        if self._priority:
            self._seq += 1
            user.queue.put_nowait((-priority, self._seq, message, fut))
        else:
            user.queue.put_nowait((message, fut))
        if interrupt and user.busy and not user.interrupting and user.task is not None:
            user.interrupting = True
            user.task.cancel()

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self._put(key, message, None, priority, interrupt)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self._put(key, message, fut, priority, interrupt)
        return fut

    async def _work(self, key: Key, user: _QueueUser) -> None:
        queue, handler, idle = user.queue, self._handler, self._idle
        task = asyncio.current_task()
        assert task is not None
        while True:
            fut = None
            try:
                if idle is None:
                    item = await queue.get()
                else:
                    try:
                        async with asyncio.timeout(idle):
                            item = await queue.get()
                    except TimeoutError:
                        if queue.empty():  # idle: nothing waits, drop this user
                            del self._users[key]
                            return
                        continue
                message, fut = item[-2], item[-1]
                user.busy = True
                try:
                    result = await handler(key, message)
                finally:
                    user.busy = False
                _resolve(fut, result)
            except asyncio.CancelledError:
                if not user.interrupting:
                    raise
                user.interrupting = False
                task.uncancel()
                _fail(fut, PeerInterrupted())
            except Exception as exc:
                _fail(fut, exc)

    def live(self) -> int:
        return len(self._users)

    async def close(self) -> None:
        tasks = [u.task for u in self._users.values() if u.task is not None]
        self._users.clear()
        await _cancel_all(tasks)


async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until each has ended."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class _PromiseUser:
    __slots__ = ("items", "processing")

    def __init__(self) -> None:
        self.items: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        self.processing = False


class PromiseQueuePeer(Peer):
    """A per-user list plus a ``processing`` flag; every enqueue returns a future.

    After the Node per-user promise queue: ``enqueue`` appends the item and,
    if the user is not being processed, starts a drain task that handles the
    items one by one and resolves their futures; a drained user is deleted
    (the Node version's "active users" count). A ``deque`` stands in for the
    JavaScript array so that ``shift`` is O(1).
    """

    name = "promise-queue"
    description = "per-user list + processing flag, enqueue returns a future"
    capabilities = frozenset({IDLE})

    def __init__(self, handler: Handler, **options: Any) -> None:
        super().__init__(handler, **options)
        self._users: dict[Key, _PromiseUser] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, key: Key, message: Any) -> asyncio.Future[Any]:
        """Append ``message`` to the user's list and return its future."""
        fut = self.loop.create_future()
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _PromiseUser()
        user.items.append((message, fut))
        if not user.processing:
            user.processing = True
            task = self.loop.create_task(self._process(key, user))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fut

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self.enqueue(key, message)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> asyncio.Future[Any]:
        return self.enqueue(key, message)

    async def _process(self, key: Key, user: _PromiseUser) -> None:
        handler, items = self._handler, user.items
        try:
            while items:
                message, fut = items.popleft()
                try:
                    result = await handler(key, message)
                except Exception as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
        finally:
            user.processing = False
            if self._users.get(key) is user:
                del self._users[key]

    def live(self) -> int:
        return len(self._users)

    async def close(self) -> None:
        await _cancel_all(self._tasks)
        for user in self._users.values():
            for _, fut in user.items:
                fut.cancel()
        self._users.clear()


class _LockUser:
    __slots__ = ("current", "interrupted", "lock", "refs")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.refs = 0
        self.current: asyncio.Task[None] | None = None
        self.interrupted = False


class LockPeer(Peer):
    """A task per message, serialised by a per-user ``asyncio.Lock``.

    Order comes from the lock's FIFO waiters (tasks start in creation order).
    ``interrupt=True`` cancels the task that holds the lock, as the
    ``/cancel`` command of chatgpt_telegram_bot does with its ``user_tasks``.
    Locks are reference counted and deleted when no task uses them (the fix
    for the ever-growing lock dicts in aiogram and friends).
    """

    name = "lock-per-user"
    description = "task per message + per-user asyncio.Lock"
    capabilities = frozenset({INTERRUPT, IDLE})

    def __init__(self, handler: Handler, **options: Any) -> None:
        super().__init__(handler, **options)
        self._users: dict[Key, _LockUser] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _submit(
        self, key: Key, message: Any, fut: asyncio.Future[Any] | None, interrupt: bool
    ) -> None:
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _LockUser()
        user.refs += 1
        if interrupt and user.current is not None and not user.interrupted:
            user.interrupted = True
            user.current.cancel()
        task = self.loop.create_task(self._run(key, user, message, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self._submit(key, message, None, interrupt)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self._submit(key, message, fut, interrupt)
        return fut

    async def _run(
        self, key: Key, user: _LockUser, message: Any, fut: asyncio.Future[Any] | None
    ) -> None:
        try:
            async with user.lock:
                user.current = asyncio.current_task()
                try:
                    result = await self._handler(key, message)
                except asyncio.CancelledError:
                    if not user.interrupted:
                        raise
                    task = asyncio.current_task()
                    assert task is not None
                    task.uncancel()
                    _fail(fut, PeerInterrupted())
                except Exception as exc:
                    _fail(fut, exc)
                else:
                    _resolve(fut, result)
                finally:
                    user.current = None
                    user.interrupted = False
        finally:
            user.refs -= 1
            if user.refs == 0 and self._users.get(key) is user:
                del self._users[key]

    def live(self) -> int:
        return len(self._users)

    async def close(self) -> None:
        await _cancel_all(self._tasks)
        self._users.clear()
