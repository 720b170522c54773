"""The codec: messages, actor state and journal envelopes as bytes, with msgpack.

A durable store keeps what the runtime accepted as bytes, so everything it
stores goes through one `Codec`: a message (`dumps`/`loads`), an actor's
snapshot state (`dumps`/`loads`) and the envelope around a journaled message
(`encode_envelope`/`decode_envelope`).

What it encodes, and gives back with the same types (exact types: a subclass
of a container, an `OrderedDict` or a `NamedTuple` say, is refused unless
registered):

* `None`, `bool`, `float` (NaN and the infinities included), `str`, `bytes`;
* `int` in msgpack's range, -2**63 to 2**64 - 1 (a larger one is refused at
  encode: store it as a `str`, or register a wrapper class);
* `list`, `tuple` (kept a tuple, so a frozen dataclass stays hashable) and
  `dict` whose keys are `str` or `int`;
* an aware `datetime` (msgpack's own timestamp; it comes back in UTC, equal
  to the original; a naive one is refused, as it names no instant);
* instances of the classes registered with `Codec.register`: dataclasses by
  their fields, any other class through a pair of functions.

A subclass of `str`, `int` or `float` that is not registered (a `StrEnum`,
an `IntEnum`, `(str, Enum)` members such as python-telegram-bot's `ChatType`)
is stored as its plain value, by the base type's own conversion (not its
`__str__`), and decodes as the base type: `"group"`, not `ChatType.GROUP`,
which compares equal to it. Anything else such an instance holds is not
kept; register the class to get it back (an enum with `encode=lambda e:
e.value, decode=TheEnum`). The same holds for dict keys. An
int subclass outside msgpack's range is refused like any int; an unregistered
dataclass that subclasses one of them is refused, as its fields would be lost;
a registered class is never stored as its plain value (as a dict key it is
refused), and `bool`, which has no subclasses, stays a bool.

Nothing is ever pickled and decoding never imports anything: a registered
object is stored as its tag and its value, and only a tag registered on the
decoding codec is turned back into an object.

Every failure is a `CodecError`: a value that cannot be encoded (its type and
where it sits in the value are named), a payload over `max_size`, bytes that
are not, or not entirely, something this codec wrote (random, truncated,
trailing data, an unknown extension or tag), and a registered decoder that
raised. Decoding is bounded: the payload size is checked before anything is
read, msgpack's length limits are those of the payload, and nesting is
limited to `MAX_DEPTH`.

The format is plain msgpack (str as str, bytes as bin, a datetime as msgpack's
timestamp extension -1), plus two extension types of its own, each holding
msgpack: 1, a tuple (its items as an array); 2, a registered object (the array
[tag, value], where the value of a dataclass is the map of its fields). An
envelope is the array [version, key, priority, attempt, accepted_at, msg_id,
message, expires_at], the message being the bytes `dumps` gives, so that a
record whose message no longer decodes still tells its key and id;
`accepted_at` and `expires_at` are wall-clock seconds (`time.time()`) as
floats, `expires_at` nil for a message sent without a ttl. With tracing on
(supervisors/observe) a ninth field may follow: `trace`, the sender's trace
context as text (a W3C `traceparent`). It is written only when there is one,
so an untraced record costs nothing more, and a record of eight fields (all
written before tracing existed) still decodes, with `trace` None.

The walking of values and the bounded decoding are in `_codec_format.py`.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from actors._errors import CodecError
from actors.journal._codec_format import (
    BUILT_IN,
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    CodecFormat,
    Entry,
    packb,
    short,
    type_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ENVELOPE_VERSION",
    "MAX_DEPTH",
    "Codec",
    "CodecError",
    "EnvelopeRecord",
]

T = TypeVar("T")

#: The default limit, in bytes, on one encoded value or envelope (1 MiB).
DEFAULT_MAX_SIZE: Final = 1_048_576

#: The format version written in every envelope; `decode_envelope` refuses others.
ENVELOPE_VERSION: Final = 1

_TAG_MAX_LEN: Final = 200
# version, key, priority, attempt, accepted_at, msg_id, message, expires_at[, trace]
_ENVELOPE_FIELDS: Final = 8
_TRACE_MAX_LEN: Final = 1024  # a traceparent is 55 characters; a tracestate at most 512


@final
@dataclass(frozen=True, slots=True)
class EnvelopeRecord:
    """A journaled message as `Codec.decode_envelope` gives it back."""

    key: str | int
    """The user key the message was sent to."""
    message: Any
    """The message, decoded."""
    priority: int
    """The priority it was sent with."""
    attempt: int
    """How many times a handler had started on it when the record was written."""
    accepted_at: float
    """When the runtime accepted it, in seconds (wall-clock time, so that it still
    means something after a restart)."""
    msg_id: str | None
    """The message's id, if it has one."""
    expires_at: float | None = None
    """When it expires, in wall-clock seconds (`time.time()`), if it was sent with a
    ttl; None if it never expires."""
    trace: str | None = None
    """The trace context it was sent under (tracing on), as text; else None."""


@final
class Codec(CodecFormat):
    """Encodes values to msgpack bytes and back; the codec of the durable store.

    `max_size` bounds every payload, both ways: `dumps` and `encode_envelope`
    refuse a value whose encoding is larger, `loads` and `decode_envelope`
    refuse longer bytes before reading them. For an envelope the limit is on
    the whole record, so the message itself gets the limit less a few dozen
    bytes (its key, id and numbers).

    Register the application's own types before the first value is encoded or
    decoded. The codec can then be used from any thread: encoding and decoding
    only read the registrations.
    """

    __slots__ = ()

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if type(max_size) is not int or max_size < 1:
            raise CodecError(f"max_size must be an int >= 1, got {max_size!r}")
        super().__init__(max_size)

    @property
    def max_size(self) -> int:
        """The largest payload, in bytes, that this codec writes or reads."""
        return self._max_size

    def __repr__(self) -> str:
        return f"Codec(max_size={self._max_size}, registered={len(self._by_tag)})"

    # -- registration --------------------------------------------------------------

    def register(
        self,
        cls: type[T],
        *,
        tag: str | None = None,
        encode: Callable[[T], Any] | None = None,
        decode: Callable[[Any], T] | None = None,
    ) -> type[T]:
        """Make instances of `cls` encodable; returns `cls`, so it also works as a decorator.

        A dataclass needs no functions: it is stored as its fields by name (every
        field, each encoded in turn, so it may hold other registered objects) and
        rebuilt by calling the class with the fields `__init__` takes (so
        `__post_init__` runs), then setting the `init=False` ones. Frozen and
        slotted dataclasses work. Renaming or removing a field makes stored
        payloads undecodable; adding one with a default does not.

        Any other class needs both functions: `encode(obj)` returns a value this
        codec can encode (which may contain registered objects), `decode(value)`
        gets that value back and returns the object. They may be given for a
        dataclass too.

        Only instances of exactly `cls` are encoded this way, not of its
        subclasses. A subclass of `str`, `int` or `float` registered here (an enum
        say) is encoded by its registration, not as its plain value, and decodes as
        `cls` again. `tag` names the class in every payload; it defaults to
        `"module.QualName"` and must stay the same for as long as payloads
        written with it are to be read (so give one to a class defined in
        `__main__` or in a function). A tag is up to 200 printable characters,
        without whitespace.

        Raises `CodecError` if `cls` or `tag` is already registered, if the tag
        is malformed, if only one function is given, or if a class that is not a
        dataclass (or a dataclass whose `__init__` needs an `InitVar`) comes
        without functions.
        """
        if not isinstance(cls, type):
            raise CodecError(f"register() takes a class, got {cls!r}")
        name = type_name(cls)
        if cls in BUILT_IN:
            raise CodecError(f"{name} is encoded natively: it cannot be registered")
        if tag is None:
            tag = f"{cls.__module__}.{cls.__qualname__}"
        if not _valid_tag(tag):
            raise CodecError(
                f"bad tag {tag!r} for {name}: a tag is a non-empty str of at most "
                f"{_TAG_MAX_LEN} printable characters, without whitespace"
            )
        if (encode is None) != (decode is None):
            raise CodecError(f"register({name}): give both encode= and decode=, or neither")
        if encode is not None and not (callable(encode) and callable(decode)):
            raise CodecError(f"register({name}): encode= and decode= must be callables")
        fields: tuple[str, ...] | None = None
        not_init: frozenset[str] = frozenset()
        if encode is None:
            fields, not_init = _dataclass_layout(cls, name)
        if cls in self._by_type:
            raise CodecError(f"{name} is already registered (tag {self._by_type[cls].tag!r})")
        if tag in self._by_tag:
            raise CodecError(
                f"tag {tag!r} is already registered for {type_name(self._by_tag[tag].cls)}"
            )
        entry = Entry(cls, tag, fields, not_init, encode, decode)
        self._by_type[cls] = entry
        self._by_tag[tag] = entry
        return cls

    def registered(self, cls: type[Any]) -> bool:
        """Whether instances of exactly `cls` are encoded by a registration of this codec."""
        return cls in self._by_type

    # -- values --------------------------------------------------------------------

    def dumps(self, value: Any) -> bytes:
        """Encode `value`; raises `CodecError` if it cannot be, or if it exceeds `max_size`."""
        return self._encode(value, "value")

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode what `dumps` wrote; raises `CodecError` for anything else.

        `data` may be `bytes`, a `bytearray` or a `memoryview`. Bytes longer than
        `max_size` are refused without being read.
        """
        return self._unpack(self._as_bytes(data, "payload"), 0)

    # -- envelopes -----------------------------------------------------------------

    def encode_envelope(
        self,
        key: str | int,
        message: Any,
        *,
        priority: int = 0,
        attempt: int = 0,
        accepted_at: float,
        msg_id: str | None = None,
        expires_at: float | None = None,
        trace: str | None = None,
    ) -> bytes:
        """Encode a journaled message with its envelope, in the current format version.

        `accepted_at` and `expires_at` are wall-clock times (`time.time()`);
        `expires_at` is when a message sent with a ttl expires, None for one sent
        without. An int given for either is stored as a float. `trace` (text, e.g. a
        W3C `traceparent`) is the trace context it was sent under, None for none.

        Raises `CodecError` before anything is written if the message cannot be
        encoded, if the record would exceed `max_size`, or if a field has the
        wrong type (`key` a non-empty str or an int, `priority` and `attempt`
        ints >= 0, `accepted_at` a number, `msg_id` a str or None, `expires_at`
        a number or None, `trace` a str of at most 1024 characters or None).
        """
        accepted_at = _int_to_float(accepted_at, "accepted_at")
        expires_at = _int_to_float(expires_at, "expires_at")
        _check_envelope_fields(key, priority, attempt, accepted_at, msg_id, expires_at)
        t = type(message)
        if (
            t is str
            or t is bytes
            or t is float
            or t is bool
            or message is None
            or (t is int and INT_MIN <= message <= INT_MAX)
        ):
            body = packb(message)  # a scalar: nothing to walk (the common chat message)
        else:
            body = self._encode(message, "message")
        fields = [ENVELOPE_VERSION, key, priority, attempt, accepted_at, msg_id, body, expires_at]
        if trace is not None:
            _check_trace(trace)
            fields.append(trace)
        record = packb(fields)
        self._check_size(len(record), "envelope")
        return record

    def with_trace(self, record: bytes, trace: str) -> bytes:
        """`record` (what `encode_envelope` wrote without a trace) with `trace` added.

        For a record encoded before its trace context was known (a durable store
        encodes at the call site, the runtime adds the context as it accepts it):
        the array's header gains a field, nothing else is re-encoded. A record that
        would grow past `max_size`, or that has its trace already, is returned as is.
        """
        _check_trace(trace)
        if record[:1] != _EIGHT_FIELDS:
            return record
        traced = _NINE_FIELDS + record[1:] + packb(trace)
        return record if len(traced) > self._max_size else traced

    def decode_envelope(self, data: bytes | bytearray | memoryview) -> EnvelopeRecord:
        """Decode what `encode_envelope` wrote, message included.

        Raises `CodecError` for bytes that are not an envelope, for an envelope
        of a format version this codec does not read, and for a message that
        cannot be decoded (the error then names the key and the id).
        """
        return EnvelopeRecord(*self._envelope_fields(data))

    def _envelope_fields(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[str | int, Any, int, int, float, str | None, float | None, str | None]:
        """`decode_envelope`'s fields as a tuple, in its order, for a reader that needs
        a few of them per message (the cluster's: a record object costs a microsecond)."""
        if type(data) is not bytes or len(data) > self._max_size:
            data = self._as_bytes(data, "envelope")  # a copy, or the size's CodecError
        record = self._unpack(data, 0, envelope=True)
        if type(record) is not list or not record or type(record[0]) is not int:
            raise CodecError("not an inorder envelope: expected [version, ...]")
        if record[0] != ENVELOPE_VERSION:
            raise CodecError(
                f"unknown envelope format version {record[0]} "
                f"(this version of inorder reads version {ENVELOPE_VERSION})"
            )
        trace = None
        if len(record) == _ENVELOPE_FIELDS + 1:  # the optional trace context
            trace = record.pop()
            if type(trace) is not str or len(trace) > _TRACE_MAX_LEN:
                raise CodecError("malformed envelope: its trace context is not a short str")
        if len(record) != _ENVELOPE_FIELDS:
            raise CodecError(
                f"malformed envelope: {len(record)} fields, version "
                f"{ENVELOPE_VERSION} has {_ENVELOPE_FIELDS} (and an optional trace)"
            )
        _, key, priority, attempt, accepted_at, msg_id, body, expires_at = record
        _check_envelope_fields(key, priority, attempt, accepted_at, msg_id, expires_at)
        if type(body) is not bytes:
            raise CodecError(f"malformed envelope: the message is {type(body).__name__}")
        try:
            message = self._unpack(body, 0)
        except CodecError as exc:
            raise CodecError(
                f"cannot decode the message of the envelope for key {short(key)} "
                f"(msg_id {short(msg_id)}): {exc}"
            ) from exc
        return key, message, priority, attempt, accepted_at, msg_id, expires_at, trace


# -- helpers ---------------------------------------------------------------------------


def _check_envelope_fields(
    key: Any, priority: Any, attempt: Any, accepted_at: Any, msg_id: Any, expires_at: Any
) -> None:
    problem = None
    if not ((type(key) is str and key) or (type(key) is int and INT_MIN <= key < 2**63)):
        # A signed 64-bit int, as the journal stores keys: a larger one is refused here,
        # at the call site, not when the journal is written.
        problem = f"key must be a non-empty str or an int in -2**63..2**63-1, got {short(key)}"
    elif type(priority) is not int or not 0 <= priority <= INT_MAX:
        problem = f"priority must be an int >= 0, got {short(priority)}"
    elif type(attempt) is not int or not 0 <= attempt <= INT_MAX:
        problem = f"attempt must be an int >= 0, got {short(attempt)}"
    elif type(accepted_at) is not float:
        problem = f"accepted_at must be a float, got {type(accepted_at).__name__}"
    elif msg_id is not None and type(msg_id) is not str:
        problem = f"msg_id must be a str or None, got {type(msg_id).__name__}"
    elif expires_at is not None and type(expires_at) is not float:
        problem = f"expires_at must be a float or None, got {type(expires_at).__name__}"
    if problem is not None:
        raise CodecError(f"bad envelope: {problem}")


# msgpack's fixarray headers of the envelope without and with its trace field.
_EIGHT_FIELDS: Final = packb([None] * _ENVELOPE_FIELDS)[:1]
_NINE_FIELDS: Final = packb([None] * (_ENVELOPE_FIELDS + 1))[:1]


def _check_trace(trace: Any) -> None:
    if type(trace) is not str or not 0 < len(trace) <= _TRACE_MAX_LEN:
        raise CodecError(
            f"bad envelope: trace must be a non-empty str of at most {_TRACE_MAX_LEN} "
            f"characters, got {short(trace)}"
        )


def _int_to_float(value: Any, name: str) -> Any:
    """An int time as a float, as the envelope stores it; anything else as it is."""
    if type(value) is not int:
        return value
    try:
        return float(value)
    except OverflowError:  # a CodecError like every bad field, not an OverflowError
        raise CodecError(f"bad envelope: {name} is an int too large for a float") from None


def _dataclass_layout(cls: type[Any], name: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The fields a registered dataclass is stored by, and which of them `__init__` skips."""
    if not dataclasses.is_dataclass(cls):
        raise CodecError(
            f"{name} is not a dataclass: register it with encode= and decode= functions"
        )
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    not_init = frozenset(f.name for f in fields if not f.init)
    required = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and (p.name not in names or p.name in not_init)
    ]
    if required:
        raise CodecError(
            f"{name}.__init__ needs {', '.join(required)}, which are not stored fields "
            "(an InitVar?): register it with encode= and decode= functions"
        )
    return names, not_init


def _valid_tag(tag: Any) -> bool:
    return (
        type(tag) is str
        and 0 < len(tag) <= _TAG_MAX_LEN
        and tag.isprintable()
        and not any(c.isspace() for c in tag)
    )
