"""The codec: messages, actor state and journal envelopes as bytes, with msgpack.

A durable store keeps what the runtime accepted as bytes, so everything it
stores goes through one `Codec`: a message (`dumps`/`loads`), an actor's
snapshot state (`dumps`/`loads`) and the envelope around a journaled message
(`encode_envelope`/`decode_envelope`).

What it encodes, and gives back with the same types (exact types only: a
subclass of one of these, an `IntEnum` or an `OrderedDict` say, is refused
unless registered):

* `None`, `bool`, `float` (NaN and the infinities included), `str`, `bytes`;
* `int` in msgpack's range, -2**63 to 2**64 - 1 (a larger one is refused at
  encode: store it as a `str`, or register a wrapper class);
* `list`, `tuple` (kept a tuple, so a frozen dataclass stays hashable) and
  `dict` whose keys are `str` or `int`;
* an aware `datetime` (msgpack's own timestamp; it comes back in UTC, equal
  to the original; a naive one is refused, as it names no instant);
* instances of the classes registered with `Codec.register`: dataclasses by
  their fields, any other class through a pair of functions.

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
message], the message being the bytes `dumps` gives, so that a record whose
message no longer decodes still tells its key and id.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import msgpack

from actors._errors import CodecError

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

#: How deep containers and registered objects may nest in an encoded value.
#: It bounds the recursion of encoding and decoding, so that no payload, however
#: crafted, can exhaust the stack.
MAX_DEPTH: Final = 64

#: The format version written in every envelope; `decode_envelope` refuses others.
ENVELOPE_VERSION: Final = 1

# msgpack extension type codes written by this codec. The payload of each is
# itself msgpack: the items of a tuple; [tag, value] of a registered object.
_EXT_TUPLE: Final = 1
_EXT_OBJECT: Final = 2

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_TAG_MAX_LEN: Final = 200
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UTC_MIN: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH).days * 86400  # whole seconds
_UTC_MAX: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH).days * 86400 + 86399
_BUILT_IN: Final = frozenset(
    {type(None), bool, int, float, str, bytes, list, tuple, dict, datetime}
)
_SUPPORTED: Final = (
    "None, bool, int, float, str, bytes, list, tuple, dict, aware datetime "
    "and classes registered with Codec.register"
)
_ENVELOPE_FIELDS: Final = 7  # version, key, priority, attempt, accepted_at, msg_id, message


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


@final
@dataclass(frozen=True, slots=True)
class _Entry:
    """One registered class: a dataclass by its fields, or a pair of functions."""

    cls: type[Any]
    tag: str
    fields: tuple[str, ...] | None  # a dataclass: every field, stored by name
    not_init: frozenset[str]  # of those, the fields that __init__ does not take
    encode: Callable[[Any], Any] | None
    decode: Callable[[Any], Any] | None


class _UnencodableError(Exception):
    """Internal: a part of a value cannot be encoded; collects its path on the way out."""

    def __init__(self, problem: str, cause: BaseException | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.cause = cause
        self.path: list[str] = []  # innermost first

    def error(self, root: str) -> CodecError:
        return CodecError(f"cannot encode {root}{''.join(reversed(self.path))}: {self.problem}")


@final
class Codec:
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

    __slots__ = ("_by_tag", "_by_type", "_max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if type(max_size) is not int or max_size < 1:
            raise CodecError(f"max_size must be an int >= 1, got {max_size!r}")
        self._max_size = max_size
        self._by_type: dict[type[Any], _Entry] = {}
        self._by_tag: dict[str, _Entry] = {}

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
        subclasses. `tag` names the class in every payload; it defaults to
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
        name = _type_name(cls)
        if cls in _BUILT_IN:
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
                f"tag {tag!r} is already registered for {_type_name(self._by_tag[tag].cls)}"
            )
        entry = _Entry(cls, tag, fields, not_init, encode, decode)
        self._by_type[cls] = entry
        self._by_tag[tag] = entry
        return cls

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
    ) -> bytes:
        """Encode a journaled message with its envelope, in the current format version.

        Raises `CodecError` before anything is written if the message cannot be
        encoded, if the record would exceed `max_size`, or if a field has the
        wrong type (`key` a non-empty str or an int, `priority` and `attempt`
        ints >= 0, `accepted_at` a number, `msg_id` a str or None).
        """
        if type(accepted_at) is int:
            accepted_at = float(accepted_at)
        _check_envelope_fields(key, priority, attempt, accepted_at, msg_id)
        body = self._encode(message, "message")
        record = _packb([ENVELOPE_VERSION, key, priority, attempt, accepted_at, msg_id, body])
        self._check_size(len(record), "envelope")
        return record

    def decode_envelope(self, data: bytes | bytearray | memoryview) -> EnvelopeRecord:
        """Decode what `encode_envelope` wrote, message included.

        Raises `CodecError` for bytes that are not an envelope, for an envelope
        of a format version this codec does not read, and for a message that
        cannot be decoded (the error then names the key and the id).
        """
        record = self._unpack(self._as_bytes(data, "envelope"), 0, envelope=True)
        if type(record) is not list or not record or type(record[0]) is not int:
            raise CodecError("not an inorder envelope: expected [version, ...]")
        if record[0] != ENVELOPE_VERSION:
            raise CodecError(
                f"unknown envelope format version {record[0]} "
                f"(this version of inorder reads version {ENVELOPE_VERSION})"
            )
        if len(record) != _ENVELOPE_FIELDS:
            raise CodecError(
                f"malformed envelope: {len(record)} fields, version "
                f"{ENVELOPE_VERSION} has {_ENVELOPE_FIELDS}"
            )
        _, key, priority, attempt, accepted_at, msg_id, body = record
        _check_envelope_fields(key, priority, attempt, accepted_at, msg_id)
        if type(body) is not bytes:
            raise CodecError(f"malformed envelope: the message is {type(body).__name__}")
        try:
            message = self._unpack(body, 0)
        except CodecError as exc:
            raise CodecError(
                f"cannot decode the message of the envelope for key {_short(key)} "
                f"(msg_id {_short(msg_id)}): {exc}"
            ) from exc
        return EnvelopeRecord(key, message, priority, attempt, accepted_at, msg_id)

    # -- encoding ------------------------------------------------------------------

    def _encode(self, value: Any, root: str) -> bytes:
        try:
            tree = self._tree(value, 0)
        except _UnencodableError as exc:
            raise exc.error(root) from exc.cause
        data = _packb(tree)
        self._check_size(len(data), root)
        return data

    def _tree(self, value: Any, depth: int) -> Any:
        """`value` as msgpack's packer takes it: tuples and objects become extensions."""
        t = type(value)
        if t is str or t is float or t is bool or t is bytes or value is None:
            return value
        if t is int:
            if _INT_MIN <= value <= _INT_MAX:
                return value
            raise _UnencodableError(
                f"int of {value.bit_length()} bits is outside the range msgpack stores "
                "(-2**63 to 2**64 - 1): store it as a str, or register a wrapper class"
            )
        if depth >= MAX_DEPTH:
            raise _UnencodableError(
                f"{_type_name(t)} nested deeper than {MAX_DEPTH} levels "
                "(or a container that contains itself)"
            )
        depth += 1
        if t is list or t is tuple:
            items = []
            for i, item in enumerate(value):
                try:
                    items.append(self._tree(item, depth))
                except _UnencodableError as exc:
                    exc.path.append(f"[{i}]")
                    raise
            return items if t is list else self._ext(_EXT_TUPLE, items)
        if t is dict:
            out = {}
            for k, item in value.items():
                kt = type(k)
                if kt is not str and (kt is not int or not _INT_MIN <= k <= _INT_MAX):
                    raise _UnencodableError(
                        f"dict key of type {_type_name(kt)}: keys must be str or int (64-bit)"
                    )
                try:
                    out[k] = self._tree(item, depth)
                except _UnencodableError as exc:
                    exc.path.append(f"[{_short(k)}]")
                    raise
            return out
        if t is datetime:
            if value.tzinfo is None or value.utcoffset() is None:
                raise _UnencodableError(
                    "naive datetime (no tzinfo): give it a timezone, "
                    "e.g. datetime.now(timezone.utc)"
                )
            delta = value - _EPOCH
            seconds = delta.days * 86400 + delta.seconds
            if not _UTC_MIN <= seconds <= _UTC_MAX:
                # It would come back in UTC, where this instant has no datetime.
                raise _UnencodableError(f"datetime {value} is outside the years 1-9999 in UTC")
            return msgpack.Timestamp(seconds, delta.microseconds * 1000)
        entry = self._by_type.get(t)
        if entry is None:
            raise _UnencodableError(
                f"{_type_name(t)} is not a supported type (supported: {_SUPPORTED})"
            )
        return self._ext(_EXT_OBJECT, [entry.tag, self._object_body(entry, value, depth)])

    def _object_body(self, entry: _Entry, obj: Any, depth: int) -> Any:
        if entry.fields is not None:
            body = {}
            for name in entry.fields:
                try:
                    body[name] = self._tree(getattr(obj, name), depth)
                except _UnencodableError as exc:
                    exc.path.append(f".{name}")
                    raise
                except AttributeError as exc:
                    raise _UnencodableError(
                        f"{entry.tag!r} object has no field {name!r}", exc
                    ) from exc
            return body
        assert entry.encode is not None
        try:
            encoded = entry.encode(obj)
        except Exception as exc:
            raise _UnencodableError(
                f"the encoder registered for {entry.tag!r} raised {exc!r}", exc
            ) from exc
        try:
            return self._tree(encoded, depth)
        except _UnencodableError as exc:
            exc.path.append(f".<{entry.tag} encoded>")
            raise

    def _ext(self, code: int, items: Any) -> Any:
        payload = _packb(items)
        self._check_size(len(payload), "value")  # early: no use packing further
        return msgpack.ExtType(code, payload)

    def _check_size(self, size: int, what: str) -> None:
        if size > self._max_size:
            raise CodecError(
                f"{what} too large: {size} bytes encoded, the limit is {self._max_size} bytes"
            )

    # -- decoding ------------------------------------------------------------------

    def _as_bytes(self, data: object, what: str) -> bytes:
        """`data` as bytes, refused before it is copied or read if it exceeds `max_size`."""
        if isinstance(data, bytes):
            self._check_size(len(data), what)
            return data
        if isinstance(data, bytearray | memoryview):
            view = memoryview(data)
            self._check_size(view.nbytes, what)
            return view.tobytes()
        raise CodecError(f"cannot decode a {type(data).__name__}: expected bytes")

    def _unpack(self, data: bytes, depth: int, *, envelope: bool = False) -> Any:
        """Unpack one whole value; `depth` counts the extensions it sits in."""

        def ext_hook(code: int, payload: bytes) -> Any:
            if envelope:
                raise CodecError("not an inorder envelope: an extension in the record")
            return self._from_ext(code, payload, depth + 1)

        size = len(data)
        try:
            if depth == 0:
                # The top level: msgpack's fastest path. Its parser state lives on the
                # C stack (tens of kB), which is fine once but not per nesting level.
                return msgpack.unpackb(
                    data,
                    raw=False,
                    strict_map_key=False,
                    timestamp=3,
                    use_list=True,
                    object_pairs_hook=_dict_from_pairs,
                    ext_hook=ext_hook,
                    max_str_len=size,
                    max_bin_len=size,
                    max_array_len=size,
                    max_map_len=size // 2,
                    max_ext_len=size,
                )
            # Inside an extension: an Unpacker keeps its parser state on the heap.
            unpacker = msgpack.Unpacker(
                raw=False,
                strict_map_key=False,
                timestamp=3,
                use_list=True,
                object_pairs_hook=_dict_from_pairs,
                ext_hook=ext_hook,
                max_buffer_size=max(size, 1),
            )
            unpacker.feed(data)
            value = unpacker.unpack()
            if unpacker.tell() != size:
                raise CodecError("malformed payload: trailing data inside an extension")
            return value
        except CodecError:
            raise
        except Exception as exc:
            where = f"({size} bytes)" if depth == 0 else "(inside an extension)"
            raise CodecError(f"malformed payload {where}: {_describe(exc)}") from exc

    def _from_ext(self, code: int, payload: bytes, depth: int) -> Any:
        if code != _EXT_TUPLE and code != _EXT_OBJECT:
            raise CodecError(f"unknown msgpack extension type {code}: not written by this codec")
        if depth > MAX_DEPTH:
            raise CodecError(f"malformed payload: nested deeper than {MAX_DEPTH} levels")
        inner = self._unpack(payload, depth)
        if code == _EXT_TUPLE:
            if type(inner) is not list:
                raise CodecError("malformed payload: a tuple extension that holds no array")
            return tuple(inner)
        if type(inner) is not list or len(inner) != 2 or type(inner[0]) is not str:
            raise CodecError("malformed payload: an object extension that holds no [tag, value]")
        tag, value = inner
        entry = self._by_tag.get(tag)
        if entry is None:
            raise CodecError(
                f"unknown type tag {_short(tag)}: register its class with this tag "
                "on the codec that decodes"
            )
        if entry.fields is None:
            assert entry.decode is not None
            try:
                return entry.decode(value)
            except Exception as exc:
                raise CodecError(f"the decoder registered for {tag!r} raised {exc!r}") from exc
        if type(value) is not dict or any(type(k) is not str for k in value):
            raise CodecError(f"malformed payload: the fields of {tag!r} are not a str-keyed map")
        not_init = entry.not_init
        try:
            obj = entry.cls(**{k: v for k, v in value.items() if k not in not_init})
            for name in not_init:
                if name in value:
                    object.__setattr__(obj, name, value[name])
        except Exception as exc:
            raise CodecError(
                f"cannot rebuild {tag!r} from the fields {sorted(value)}: {exc!r}"
            ) from exc
        return obj


# -- helpers ---------------------------------------------------------------------------


def _packb(tree: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(tree, use_bin_type=True)
    except Exception as exc:  # not expected: _tree hands over only what msgpack packs
        raise CodecError(f"msgpack refused the value: {exc!r}") from exc
    return data


def _dict_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    for k, _ in pairs:
        if type(k) is not str and type(k) is not int:
            raise CodecError(f"malformed payload: a map key of type {type(k).__name__}")
    return dict(pairs)


def _describe(exc: Exception) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "trailing data after the value"
    if isinstance(exc, msgpack.OutOfData) or str(exc).endswith("incomplete input"):
        return "truncated (incomplete input)"
    if isinstance(exc, msgpack.FormatError):
        return "not msgpack (an invalid type byte)"
    if isinstance(exc, msgpack.StackError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _check_envelope_fields(
    key: Any, priority: Any, attempt: Any, accepted_at: Any, msg_id: Any
) -> None:
    problem = None
    if not ((type(key) is str and key) or (type(key) is int and _INT_MIN <= key <= _INT_MAX)):
        problem = f"key must be a non-empty str or an int, got {type(key).__name__}"
    elif type(priority) is not int or not 0 <= priority <= _INT_MAX:
        problem = f"priority must be an int >= 0, got {_short(priority)}"
    elif type(attempt) is not int or not 0 <= attempt <= _INT_MAX:
        problem = f"attempt must be an int >= 0, got {_short(attempt)}"
    elif type(accepted_at) is not float:
        problem = f"accepted_at must be a float, got {type(accepted_at).__name__}"
    elif msg_id is not None and type(msg_id) is not str:
        problem = f"msg_id must be a str or None, got {type(msg_id).__name__}"
    if problem is not None:
        raise CodecError(f"bad envelope: {problem}")


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


def _type_name(t: type[Any]) -> str:
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def _short(value: Any, limit: int = 60) -> str:
    if type(value) is int and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
