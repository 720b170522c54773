"""The codec's format: values as msgpack trees, the extension types, bounded decoding.

`CodecFormat` is the half of `Codec` that walks values: it turns a value into
what msgpack's packer takes (tuples and registered objects becoming this
codec's extension types, 1 and 2), checks every size against `max_size` as it
goes, and unpacks bytes back, one extension at a time, within `MAX_DEPTH`
levels. `Codec` (`_codec.py`) adds registration and the public calls; the
format itself is described there.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, final

import msgpack

from actors._errors import CodecError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BUILT_IN",
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "CodecFormat",
    "Entry",
    "packb",
    "short",
    "type_name",
]

#: How deep containers and registered objects may nest in an encoded value.
#: It bounds the recursion of encoding and decoding, so that no payload, however
#: crafted, can exhaust the stack.
MAX_DEPTH: Final = 64

# msgpack extension type codes written by this codec. The payload of each is
# itself msgpack: the items of a tuple; [tag, value] of a registered object.
_EXT_TUPLE: Final = 1
_EXT_OBJECT: Final = 2

#: The range of the ints msgpack stores.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UTC_MIN: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH).days * 86400  # whole seconds
_UTC_MAX: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH).days * 86400 + 86399
#: The types encoded natively, which cannot be registered.
BUILT_IN: Final = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict, datetime})
_SUPPORTED: Final = (
    "None, bool, int, float, str (a subclass of int, float or str as its plain value), "
    "bytes, list, tuple, dict, aware datetime and classes registered with Codec.register"
)
#: What `_base_value` returns for a value that is no subclass of str, int or float.
_NOT_BASE: Final = object()


@final
@dataclass(frozen=True, slots=True)
class Entry:
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


class CodecFormat:
    """Walks values to msgpack and back, with the registrations and the size limit.

    Holds the registrations (`_by_type`, `_by_tag`, filled by `Codec.register`)
    and `_max_size`; only reads them while encoding and decoding.
    """

    __slots__ = ("_by_tag", "_by_type", "_max_size")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._by_type: dict[type[Any], Entry] = {}
        self._by_tag: dict[str, Entry] = {}

    # -- encoding ------------------------------------------------------------------

    def _encode(self, value: Any, root: str) -> bytes:
        try:
            tree = self._tree(value, 0)
        except _UnencodableError as exc:
            raise exc.error(root) from exc.cause
        data = packb(tree)
        self._check_size(len(data), root)
        return data

    def _tree(self, value: Any, depth: int) -> Any:
        """`value` as msgpack's packer takes it: tuples and objects become extensions."""
        t = type(value)
        if t is str or t is float or t is bool or t is bytes or value is None:
            return value
        if t is int:
            if INT_MIN <= value <= INT_MAX:
                return value
            raise _UnencodableError(
                f"int of {value.bit_length()} bits is outside the range msgpack stores "
                "(-2**63 to 2**64 - 1): store it as a str, or register a wrapper class"
            )
        if depth >= MAX_DEPTH:
            base = self._base_value(value, t)
            if base is not _NOT_BASE:  # a scalar, which nests nothing
                return self._tree(base, depth)
            raise _UnencodableError(
                f"{type_name(t)} nested deeper than {MAX_DEPTH} levels "
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
                if kt is not str and (kt is not int or not INT_MIN <= k <= INT_MAX):
                    k = self._base_key(k, kt)
                try:
                    out[k] = self._tree(item, depth)
                except _UnencodableError as exc:
                    exc.path.append(f"[{short(k)}]")
                    raise
            if len(out) != len(value):
                # Only keys of str or int subclasses that hash unlike their plain value
                # can collide; one of the two items would be lost.
                raise _UnencodableError(
                    "two keys of this dict are equal as plain str or int: one would be lost"
                )
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
        if entry is not None:
            return self._ext(_EXT_OBJECT, [entry.tag, self._object_body(entry, value, depth)])
        base = self._base_value(value, t)
        if base is _NOT_BASE:
            raise _UnencodableError(
                f"{type_name(t)} is not a supported type (supported: {_SUPPORTED})"
            )
        return self._tree(base, depth)  # an int's range is checked as for any int

    def _base_value(self, value: Any, t: type[Any]) -> Any:
        """A str, int or float subclass's value as the plain base type; `_NOT_BASE` for
        anything else, and for a registered class (its registration is used).

        Reached only by values that no exact type check took, so a message of exact
        types never pays for it. An unregistered dataclass is refused rather than
        stored as its plain value: its fields would be lost."""
        if t in self._by_type or not isinstance(value, str | int | float):
            return _NOT_BASE
        if dataclasses.is_dataclass(t):
            raise _UnencodableError(
                f"{type_name(t)} is a dataclass that subclasses {_base_name(value)}: "
                "register it (as a plain value its fields would be lost)"
            )
        # The base type's own conversion, not str() or int(): a subclass may override
        # those (str() of a `class E(str, Enum)` member is "E.NAME", not its value).
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, int):  # never a bool: bool has no subclasses, and is exact
            return int.__int__(value)
        return float.__float__(value)

    def _base_key(self, key: Any, kt: type[Any]) -> Any:
        """A dict key that is not an exact str or 64-bit int: a str or int subclass's
        plain value. Anything else is refused, a bool and a registered class or a
        dataclass included: a key is stored as a plain str or int, and would not
        decode as either."""
        if kt in self._by_type or dataclasses.is_dataclass(kt):
            what = "registered type" if kt in self._by_type else "dataclass"
            raise _UnencodableError(
                f"dict key of {what} {type_name(kt)}: a key is stored as a plain "
                "str or int, and would not decode as that class"
            )
        if isinstance(key, str):
            return str.__str__(key)
        if kt is not bool and isinstance(key, int):
            base = int.__int__(key)
            if INT_MIN <= base <= INT_MAX:
                return base
        raise _UnencodableError(
            f"dict key of type {type_name(kt)}: keys must be str or int (64-bit)"
        )

    def _object_body(self, entry: Entry, obj: Any, depth: int) -> Any:
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
        payload = packb(items)
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
        size = len(data)
        try:
            if depth == 0:
                # The top level: msgpack's fastest path. Its parser state lives on the
                # C stack (tens of kB), which is fine once but not per nesting level.
                # unpackb bounds every length by the data's size by itself.
                if envelope:
                    hook: Any = _no_extension_in_an_envelope
                elif size and _SCALAR[data[0]]:
                    # A lone scalar (the common chat message): no extension, map or
                    # array to hook, so none of the options below changes the result.
                    return msgpack.unpackb(data, raw=False)
                else:
                    hook = self._ext_hook(0)
                return msgpack.unpackb(
                    data,
                    raw=False,
                    strict_map_key=False,
                    timestamp=3,
                    object_pairs_hook=_dict_from_pairs,
                    ext_hook=hook,
                )
            # Inside an extension: an Unpacker keeps its parser state on the heap.
            unpacker = msgpack.Unpacker(
                raw=False,
                strict_map_key=False,
                timestamp=3,
                use_list=True,
                object_pairs_hook=_dict_from_pairs,
                ext_hook=self._ext_hook(depth),
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

    def _ext_hook(self, depth: int) -> Any:
        """msgpack's ext_hook for a value `depth` extensions deep (made only when one may
        hold an extension: a lone scalar and an envelope's record never do)."""

        def ext_hook(code: int, payload: bytes) -> Any:
            return self._from_ext(code, payload, depth + 1)

        return ext_hook

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
                f"unknown type tag {short(tag)}: register its class with this tag "
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


_local = threading.local()


def packb(tree: Any) -> bytes:
    """Pack what `_tree` made, with a packer kept per thread (creating one per value
    costs more than packing a small message)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    try:
        data: bytes = packer.pack(tree)
    except Exception as exc:  # not expected: _tree hands over only what msgpack packs
        del _local.packer  # its buffer may hold a partial value
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


def _base_name(value: str | int | float) -> str:
    return "str" if isinstance(value, str) else "int" if isinstance(value, int) else "float"


def type_name(t: type[Any]) -> str:
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def short(value: Any, limit: int = 60) -> str:
    if type(value) is int and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_extension_in_an_envelope(code: int, payload: bytes) -> Any:
    raise CodecError("not an inorder envelope: an extension in the record")


def _scalar_markers() -> bytes:
    """The msgpack first bytes of a value that holds no other (nil, bool, int, float,
    str, bin): 1 for those, 0 for arrays, maps, extensions and the unused 0xc1."""
    table = bytearray(256)
    for lo, hi in (
        (0x00, 0x7F),  # positive fixint
        (0xA0, 0xBF),  # fixstr
        (0xC0, 0xC0),  # nil
        (0xC2, 0xC6),  # false, true, bin 8/16/32
        (0xCA, 0xD3),  # float 32/64, uint and int 8..64
        (0xD9, 0xDB),  # str 8/16/32
        (0xE0, 0xFF),  # negative fixint
    ):
        table[lo : hi + 1] = b"\x01" * (hi - lo + 1)
    return bytes(table)


_SCALAR: Final = _scalar_markers()
