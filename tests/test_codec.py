"""The msgpack codec: round-trips, registered types, envelopes, and nothing but CodecError.

Round-trips are checked with `same`, a deep equality that also compares exact
types (a tuple must come back a tuple, a bool a bool), treats NaN as equal to
NaN and tells -0.0 from 0.0, so a value equal under `==` but changed in kind
does not pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import threading
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Context, UserActor
from actors._errors import InorderError
from actors.journal._codec import (
    DEFAULT_MAX_SIZE,
    ENVELOPE_VERSION,
    MAX_DEPTH,
    Codec,
    CodecError,
    EnvelopeRecord,
)
from supervisors import Runtime
from tests.helpers import in_flight, settle

# Fuzzing is cheap: a few times the profile's examples.
FUZZ = settings(max_examples=max(300, 5 * settings().max_examples))

# -- registered test types ----------------------------------------------------------------


@dataclass
class Plain:
    text: str
    n: int = 0
    extra: Any = None


@dataclass(frozen=True)
class Frozen:
    items: tuple[int, ...]
    when: datetime | None = None


@dataclass(slots=True)
class Slotted:
    a: float
    b: bytes = b""


@dataclass(frozen=True, slots=True)
class FrozenSlots:
    name: str
    inner: Plain


@dataclass
class Derived:
    """init=False fields: one computed by __post_init__, one mutated after creation."""

    words: list[str]
    count: int = field(init=False)
    seen: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.count = len(self.words)


class Point:
    """Not a dataclass: registered with a pair of functions."""

    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


class Color(enum.IntEnum):
    RED = 1


class Box:
    """Function-registered, holding any value (registered objects included)."""

    def __init__(self, content: Any) -> None:
        self.content = content


def make_codec(max_size: int = DEFAULT_MAX_SIZE) -> Codec:
    codec = Codec(max_size=max_size)
    for cls in (Plain, Frozen, Slotted, FrozenSlots, Derived):
        codec.register(cls)
    codec.register(Point, tag="test.point", encode=lambda p: (p.x, p.y), decode=lambda v: Point(*v))
    codec.register(Box, encode=lambda b: {"content": b.content}, decode=lambda v: Box(v["content"]))
    return codec


CODEC = make_codec()


def same(a: Any, b: Any) -> bool:
    """Deep equality of exact types; NaN equals NaN, -0.0 differs from 0.0.

    `a` is what was decoded: its datetimes must be in UTC."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is datetime:
        return a == b and a.tzinfo is UTC
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if type(a) is Box:
        return same(a.content, b.content)
    return bool(a == b)


def assert_only_codec_error(call: Any, data: bytes) -> Any:
    """`call(data)` returns, or raises CodecError: never anything else."""
    try:
        return call(data)
    except CodecError:
        return None


# -- strategies ---------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
OFFSETS = st.integers(min_value=-1439, max_value=1439).map(lambda m: timezone(timedelta(minutes=m)))
AWARE = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
)
SCALARS = (
    st.none()
    | st.booleans()
    | INT64
    | st.floats()  # NaN, infinities and -0.0 included
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | AWARE
)
KEYS = st.text(max_size=8) | INT64


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(KEYS, children, max_size=4)
    )


VALUES = st.recursive(SCALARS, containers, max_leaves=16)


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Every registered type, holding generated values (registered objects among them)."""
    plain = st.builds(Plain, st.text(max_size=8), INT64, children)
    return (
        plain
        | st.builds(Frozen, st.lists(INT64, max_size=4).map(tuple), st.none() | AWARE)
        | st.builds(Slotted, st.floats(), st.binary(max_size=8))
        | st.builds(FrozenSlots, st.text(max_size=8), plain)
        | st.builds(Derived, st.lists(st.text(max_size=4), max_size=4))
        | st.builds(Point, INT64, INT64)
        | st.builds(Box, children)
    )


VALUES_WITH_OBJECTS = st.recursive(
    SCALARS, lambda children: containers(children) | objects(children), max_leaves=16
)
ENVELOPES = st.builds(
    EnvelopeRecord,
    # Keys are signed 64-bit ints, as the journal stores them.
    key=st.text(min_size=1, max_size=20) | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    message=VALUES_WITH_OBJECTS,
    priority=st.integers(min_value=0, max_value=2**64 - 1),
    attempt=st.integers(min_value=0, max_value=100),
    accepted_at=st.floats(),
    msg_id=st.none() | st.text(max_size=20),
    expires_at=st.none() | st.floats(),  # NaN and the infinities included
)


def encode(record: EnvelopeRecord) -> bytes:
    return CODEC.encode_envelope(
        record.key,
        record.message,
        priority=record.priority,
        attempt=record.attempt,
        accepted_at=record.accepted_at,
        msg_id=record.msg_id,
        expires_at=record.expires_at,
    )


# -- round-trips ----------------------------------------------------------------------------


@given(VALUES)
def test_every_supported_value_round_trips(value: Any) -> None:
    assert same(CODEC.loads(CODEC.dumps(value)), value)


@given(VALUES_WITH_OBJECTS)
def test_registered_objects_round_trip_anywhere_in_a_value(value: Any) -> None:
    assert same(CODEC.loads(CODEC.dumps(value)), value)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -0.0,
        2**64 - 1,
        -(2**63),
        (),
        ((),),
        [(1, [2, (3,)])],
        {1: "int key", "1": "str key", -5: None},
        "",
        b"",
        "naïve ✓ 🎉",
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    ],
    ids=repr,
)
def test_edge_values_round_trip(value: Any) -> None:
    assert same(CODEC.loads(CODEC.dumps(value)), value)


def test_datetime_comes_back_in_utc_as_the_same_instant() -> None:
    paris = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    back = CODEC.loads(CODEC.dumps(paris))
    assert back == paris
    assert back.tzinfo is UTC
    assert back.hour == 10


def test_registered_kinds() -> None:
    """Plain, frozen (still hashable: its tuple stays a tuple), slotted, nested, derived."""
    frozen = Frozen((1, 2), datetime(2024, 1, 1, tzinfo=UTC))
    back = CODEC.loads(CODEC.dumps(frozen))
    assert back == frozen
    assert hash(back) == hash(frozen)
    nested = FrozenSlots("outer", Plain("in", 3, [Point(1, 2), Box(Slotted(0.5, b"x"))]))
    assert same(CODEC.loads(CODEC.dumps(nested)), nested)
    derived = Derived(["a", "b"])
    derived.seen = 7  # an init=False field changed after creation is kept
    back = CODEC.loads(CODEC.dumps(derived))
    assert (back.words, back.count, back.seen) == (["a", "b"], 2, 7)


def test_register_returns_the_class_and_works_as_a_decorator() -> None:
    codec = Codec()

    @codec.register
    @dataclass
    class Local:
        x: int

    assert codec.loads(codec.dumps(Local(1))) == Local(1)


def test_a_dataclass_may_also_use_functions_and_a_tag_of_its_own() -> None:
    codec = Codec()
    codec.register(Plain, tag="v2:plain", encode=lambda p: p.text, decode=Plain)
    data = codec.dumps(Plain("hi"))
    assert b"v2:plain" in data
    assert b"extra" not in data
    assert codec.loads(data) == Plain("hi")


def test_an_enum_registers_with_functions() -> None:
    codec = Codec()
    codec.register(Color, encode=lambda c: c.value, decode=Color)
    assert same(codec.loads(codec.dumps({"c": Color.RED})), {"c": Color.RED})


# -- subclasses of str, int and float ----------------------------------------------------------


class Mood(enum.StrEnum):
    CALM = "calm"
    ANGRY = "angry"
    EMPTY = ""


class Legacy(str, enum.Enum):  # noqa: UP042 (this form, not a StrEnum, is the case)
    """The older (str, Enum) form, as python-telegram-bot's constants: str() is "Legacy.A"."""

    A = "a"
    B = "b"


class Level(enum.IntEnum):
    NEGATIVE = -5
    LOW = 0
    TOP = 2**64 - 1


class Flags(enum.IntFlag):
    A = 1
    B = 2


class Text(str):
    def __str__(self) -> str:
        return "not the value"


class Count(int):
    def __int__(self) -> int:
        return -1


class Ratio(float):
    def __float__(self) -> float:
        return -1.0


class Big(int):
    pass


@dataclass(frozen=True)
class Handle(str):
    """A dataclass that subclasses str (its text made from its field)."""

    name: str

    def __new__(cls, name: str) -> Handle:
        return super().__new__(cls, "@" + name)


class OddHash(str):
    """Equal to its plain value but hashed otherwise: in one dict with it, both stay."""

    def __hash__(self) -> int:
        return 7


SUBCLASSED = (
    st.sampled_from(list(Mood))
    | st.sampled_from(list(Legacy))
    | st.sampled_from(list(Level))
    | st.sampled_from([Flags.A, Flags.B, Flags.A | Flags.B, Flags(0)])
    | st.text(max_size=8).map(Text)
    | INT64.map(Count)
    | st.floats().map(Ratio)  # NaN and -0.0 included
)
SUBCLASSED_KEYS = (
    KEYS | st.sampled_from(list(Mood)) | st.sampled_from(list(Level)) | INT64.map(Count)
)


def containers_with_subclassed_keys(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return containers(children) | st.dictionaries(SUBCLASSED_KEYS, children, max_size=4)


VALUES_WITH_SUBCLASSES = st.recursive(
    SCALARS | SUBCLASSED,
    lambda children: containers_with_subclassed_keys(children) | objects(children),
    max_leaves=16,
)


def plain(value: Any) -> Any:
    """`value` with every str, int and float subclass replaced by its base type's value."""
    t = type(value)
    if t in (list, tuple):
        return t(plain(item) for item in value)
    if t is dict:
        return {plain(k): plain(v) for k, v in value.items()}
    if t is Plain:
        return Plain(plain(value.text), plain(value.n), plain(value.extra))
    if t is FrozenSlots:
        return FrozenSlots(value.name, plain(value.inner))
    if t is Box:
        return Box(plain(value.content))
    if t is not bool:
        for base in (str, int, float):
            if isinstance(value, base):
                return getattr(base, f"__{base.__name__}__")(value)
    return value


@given(VALUES_WITH_SUBCLASSES)
def test_str_int_and_float_subclasses_round_trip_as_their_base_type(value: Any) -> None:
    """Anywhere in a value, dict keys and registered objects included: an enum comes back
    as its value, exactly of the base type; nothing else changes."""
    assert same(CODEC.loads(CODEC.dumps(value)), plain(value))


@given(VALUES_WITH_SUBCLASSES)
def test_a_subclassed_message_round_trips_in_an_envelope(value: Any) -> None:
    data = CODEC.encode_envelope("k", value, accepted_at=1.0)
    assert same(CODEC.decode_envelope(data).message, plain(value))


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (Mood.CALM, "calm"),
        (Legacy.A, "a"),  # its value, not str(Legacy.A)
        (Text("x"), "x"),  # not its __str__
        (Count(5), 5),  # not its __int__
        (Ratio(0.5), 0.5),
        (Level.TOP, 2**64 - 1),
        (Flags.A | Flags.B, 3),
        ([True, Level.LOW, False, Flags.A], [True, 0, False, 1]),  # a bool stays a bool
        ({Mood.ANGRY: Level.NEGATIVE, Count(1): Legacy.B}, {"angry": -5, 1: "b"}),
    ],
    ids=repr,
)
def test_a_subclass_is_stored_as_the_plain_value(value: Any, stored: Any) -> None:
    data = CODEC.dumps(value)
    assert data == CODEC.dumps(stored)  # the same bytes: nothing says it was a subclass
    assert same(CODEC.loads(data), stored)


def test_a_subclass_nested_to_the_depth_limit_is_stored_as_a_plain_scalar_would_be() -> None:
    for leaf in ("calm", Mood.CALM):
        deep: Any = leaf
        for _ in range(MAX_DEPTH):
            deep = [deep]
        assert CODEC.loads(CODEC.dumps(deep)) == plain(deep)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (Big(2**64), "int of 65 bits"),  # outside msgpack's range, as a plain int
        ([Big(-(2**63) - 1)], r"value\[0\]: int of 64 bits"),
        ({Big(2**64): 1}, "dict key of type tests.test_codec.Big"),
        ({Mood.CALM: 1, True: 2}, "dict key of type bool"),
        ([Handle("ada")], "Handle is a dataclass that subclasses str: register it"),
        ({Handle("ada"): 1}, "dict key of dataclass .*Handle"),
        ({OddHash("a"): 1, "a": 2}, "two keys of this dict are equal as plain str or int"),
    ],
    ids=repr,
)
def test_subclasses_that_cannot_be_stored_plainly_are_refused(value: Any, named: str) -> None:
    with pytest.raises(CodecError, match=named):
        CODEC.dumps(value)


def test_a_registered_subclass_keeps_its_registration() -> None:
    """A registered enum, or a registered dataclass that subclasses str, comes back as its
    class; as a dict key (stored as a plain str or int) it is refused, not demoted."""
    codec = Codec()
    codec.register(Mood, encode=lambda m: m.value, decode=Mood)
    codec.register(Handle)
    value = [Mood.CALM, Handle("ada"), Level.LOW]
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert [type(v) for v in back] == [Mood, Handle, int]
    assert back[1].name == "ada"
    with pytest.raises(CodecError, match=r"dict key of registered type .*Mood"):
        codec.dumps({Mood.CALM: 1})
    with pytest.raises(CodecError, match=r"dict key of registered type .*Handle"):
        codec.dumps({Handle("ada"): 1})


# -- a Telegram update: to_dict() and de_json(), registered as the README shows -------------------


class ChatType(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"


class EntityType(str, enum.Enum):  # noqa: UP042 (python-telegram-bot's constants are so)
    BOT_COMMAND = "bot_command"
    URL = "url"


class Importance(enum.IntEnum):
    LOW = 0
    HIGH = 1


class FakeBot:
    """What de_json attaches the objects to (a telegram.Bot in the real library)."""


class TgUpdate:
    """A stand-in for python-telegram-bot 22's `Update`: not a dataclass; `to_dict()`
    gives a dict of JSON types whose enum fields stay enum members (and whose dates are
    ints, as the library's are), `de_json(data, bot)` builds the object back."""

    def __init__(
        self,
        update_id: int,
        chat_id: int,
        chat_type: ChatType,
        date: datetime,
        entities: list[tuple[EntityType, int, int]],
        importance: Importance,
        bot: FakeBot | None = None,
    ) -> None:
        self.update_id = update_id
        self.chat_id = chat_id
        self.chat_type = chat_type
        self.date = date
        self.entities = entities
        self.importance = importance
        self.bot = bot

    def to_dict(self) -> dict[str, Any]:
        return {
            "update_id": self.update_id,
            "message": {
                "chat": {"id": self.chat_id, "type": self.chat_type},
                "date": int(self.date.timestamp()),
                "entities": [
                    {"type": kind, "offset": offset, "length": length}
                    for kind, offset, length in self.entities
                ],
                "importance": self.importance,
            },
        }

    @classmethod
    def de_json(cls, data: dict[str, Any], bot: FakeBot | None) -> TgUpdate:
        message = data["message"]
        return cls(
            data["update_id"],
            message["chat"]["id"],
            ChatType(message["chat"]["type"]),
            datetime.fromtimestamp(message["date"], tz=UTC),
            [(EntityType(e["type"]), e["offset"], e["length"]) for e in message["entities"]],
            Importance(message["importance"]),
            bot,
        )


GROUP_UPDATE = TgUpdate(
    918273645,
    -1001234567890,
    ChatType.SUPERGROUP,
    datetime(2026, 1, 1, tzinfo=UTC),
    [(EntityType.BOT_COMMAND, 0, 16), (EntityType.URL, 33, 19)],
    Importance.HIGH,
)


def telegram_codec(bot: FakeBot) -> Codec:
    """The README's registration, with the stand-in for telegram.Update."""
    codec = Codec()
    codec.register(
        TgUpdate,
        tag="telegram.Update",
        encode=TgUpdate.to_dict,
        decode=lambda data: TgUpdate.de_json(data, bot),
    )
    return codec


def test_a_telegram_update_registers_with_to_dict_and_de_json() -> None:
    bot = FakeBot()
    codec = telegram_codec(bot)
    back = codec.loads(codec.dumps(GROUP_UPDATE))
    assert type(back) is TgUpdate
    assert back.to_dict() == GROUP_UPDATE.to_dict()
    assert back.chat_type is ChatType.SUPERGROUP  # de_json made the enums again
    assert back.entities[1][0] is EntityType.URL
    assert back.date == GROUP_UPDATE.date
    assert back.bot is bot
    assert b"telegram.Update" in codec.dumps(GROUP_UPDATE)


class UpdateRecorder(UserActor):
    """Records the updates it handles; a "block" in the first run waits for good."""

    got: ClassVar[list[Any]] = []
    block: ClassVar[bool] = True

    async def on_message(self, message: Any, ctx: Context) -> None:
        UpdateRecorder.got.append((message, ctx.redelivered))
        if message == "block" and UpdateRecorder.block:
            await asyncio.Event().wait()


async def test_a_telegram_update_replays_from_the_journal(tmp_path: Path) -> None:
    """Journaled behind a handler that is stopped, decoded by the next runtime's codec."""
    path = tmp_path / "bot.journal"
    first_bot, second_bot = FakeBot(), FakeBot()
    UpdateRecorder.got, UpdateRecorder.block = [], True
    rt = Runtime(UpdateRecorder, store=path, codec=telegram_codec(first_bot), idle_timeout=None)
    await rt.start()
    rt.tell(GROUP_UPDATE.chat_id, "block")
    await in_flight(rt, 1)
    await rt.send(GROUP_UPDATE.chat_id, GROUP_UPDATE)
    await rt.stop(drain=False)
    UpdateRecorder.got, UpdateRecorder.block = [], False
    codec = telegram_codec(second_bot)
    async with Runtime(UpdateRecorder, store=path, codec=codec, idle_timeout=None) as rt:
        await settle(rt)
    assert UpdateRecorder.got[0] == ("block", True)
    ((update, redelivered),) = UpdateRecorder.got[1:]
    assert type(update) is TgUpdate
    assert redelivered
    assert update.to_dict() == GROUP_UPDATE.to_dict()
    assert (update.chat_type, update.bot) == (ChatType.SUPERGROUP, second_bot)


# -- envelopes -----------------------------------------------------------------------------


@given(ENVELOPES)
def test_envelope_round_trips(record: EnvelopeRecord) -> None:
    assert same(CODEC.decode_envelope(encode(record)), record)


def test_envelope_defaults_and_int_timestamp() -> None:
    data = CODEC.encode_envelope(42, "hi", accepted_at=5)
    assert CODEC.decode_envelope(data) == EnvelopeRecord(42, "hi", 0, 0, 5.0, None)
    assert CODEC.decode_envelope(data).expires_at is None
    assert msgpack.unpackb(data)[7] is None  # the last field of eight


def test_envelope_expires_at() -> None:
    """An int is stored as a float, like accepted_at; it is the last field of the array."""
    data = CODEC.encode_envelope("k", "hi", accepted_at=1.5, msg_id="m", expires_at=90)
    record = CODEC.decode_envelope(data)
    assert record == EnvelopeRecord("k", "hi", 0, 0, 1.5, "m", 90.0)
    assert type(record.expires_at) is float
    body = msgpack.packb("hi")
    assert msgpack.unpackb(data) == [ENVELOPE_VERSION, "k", 0, 0, 1.5, "m", body, 90.0]
    for when in (float("inf"), -1.0, 1e300):  # any float: what it means is the runtime's call
        back = CODEC.decode_envelope(CODEC.encode_envelope("k", 1, accepted_at=0, expires_at=when))
        assert back.expires_at == when


def test_envelope_of_another_version_is_refused() -> None:
    data = CODEC.encode_envelope("k", "hi", accepted_at=1.0)
    record = msgpack.unpackb(data)
    assert record[0] == ENVELOPE_VERSION
    record[0] = ENVELOPE_VERSION + 1
    with pytest.raises(CodecError, match=f"version {ENVELOPE_VERSION + 1}"):
        CODEC.decode_envelope(msgpack.packb(record))


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb("a str"),
        msgpack.packb([]),
        msgpack.packb(["1", "k"]),
        msgpack.packb([1, "k", 0, 0, 1.0, None, b"\xa0"]),  # a field short
        msgpack.packb([1, "k", 0, 0, 1.0, None, b"\xa0", None, None]),  # a field too many
        msgpack.packb([1, "k", -1, 0, 1.0, None, b"\xa0", None]),  # negative priority
        msgpack.packb([1, "", 0, 0, 1.0, None, b"\xa0", None]),  # empty key
        msgpack.packb([1, "k", 0, 0, "1.0", None, b"\xa0", None]),  # accepted_at a str
        msgpack.packb([1, "k", 0, 0, 1, None, b"\xa0", None]),  # accepted_at an int
        msgpack.packb([1, "k", 0, 0, 1.0, 5, b"\xa0", None]),  # msg_id an int
        msgpack.packb([1, "k", 0, 0, 1.0, None, "not bytes", None]),
        msgpack.packb([1, "k", 0, 0, 1.0, None, msgpack.ExtType(1, b"\x90"), None]),
        msgpack.packb([1, "k", 0, 0, 1.0, None, b"\xa0", "soon"]),  # expires_at a str
        msgpack.packb([1, "k", 0, 0, 1.0, None, b"\xa0", 5]),  # expires_at an int
        msgpack.packb([1, "k", 0, 0, 1.0, None, b"\xa0", True]),  # expires_at a bool
    ],
)
def test_malformed_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        CODEC.decode_envelope(data)


def test_undecodable_message_names_its_key_and_id() -> None:
    data = CODEC.encode_envelope("telegram:42", Point(1, 2), accepted_at=1.0, msg_id="m-7")
    with pytest.raises(CodecError, match=r"'telegram:42'.*'m-7'.*unknown type tag 'test.point'"):
        Codec().decode_envelope(data)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"key": ""}, "key"),
        ({"key": True}, "key"),
        ({"key": 1.5}, "key"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"attempt": -1}, "attempt"),
        ({"accepted_at": "now"}, "accepted_at"),
        ({"msg_id": 3}, "msg_id"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({"accepted_at": 10**400}, "accepted_at"),  # no float holds it
        ({"expires_at": 10**400}, "expires_at"),
    ],
)
def test_envelope_fields_are_checked_at_encode(fields: dict[str, Any], named: str) -> None:
    args: dict[str, Any] = {"key": "k", "priority": 0, "attempt": 0, "accepted_at": 1.0}
    args.update(fields)
    key = args.pop("key")
    with pytest.raises(CodecError, match=named):
        CODEC.encode_envelope(key, "hi", **args)


# -- nothing but CodecError ------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_codec_error(data: bytes) -> None:
    value = assert_only_codec_error(CODEC.loads, data)
    if value is not None:  # valid msgpack that decodes encodes again, or says why not
        assert_only_codec_error(CODEC.dumps, value)
    assert_only_codec_error(CODEC.decode_envelope, data)


@FUZZ
@given(VALUES_WITH_OBJECTS, st.data())
def test_corrupted_payloads_only_ever_raise_codec_error(value: Any, data: st.DataObject) -> None:
    payload = bytearray(CODEC.dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload)))
        how = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if how == "insert" or at == len(payload):
            payload.insert(at, data.draw(st.integers(0, 255)))
        elif how == "flip":
            payload[at] ^= data.draw(st.integers(1, 255))
        else:
            del payload[at]
    assert_only_codec_error(CODEC.loads, bytes(payload))


@given(VALUES_WITH_OBJECTS)
def test_truncated_or_extended_payloads_raise_codec_error(value: Any) -> None:
    payload = CODEC.dumps(value)
    for end in range(len(payload)):
        with pytest.raises(CodecError):
            CODEC.loads(payload[:end])
    with pytest.raises(CodecError, match="trailing data"):
        CODEC.loads(payload + b"\xc0")


@given(ENVELOPES)
def test_truncated_envelopes_raise_codec_error(record: EnvelopeRecord) -> None:
    data = encode(record)
    for end in range(len(data)):
        with pytest.raises(CodecError):
            CODEC.decode_envelope(data[:end])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\xc1", "not msgpack"),
        (b"\x01\x02", "trailing data"),
        (msgpack.packb(msgpack.ExtType(42, b"\x90")), "extension type 42"),
        (msgpack.packb(msgpack.ExtType(1, b"\x01")), "tuple extension"),
        (msgpack.packb(msgpack.ExtType(1, b"\x91")), "truncated"),
        (msgpack.packb(msgpack.ExtType(1, b"\x90\x90")), "trailing data"),
        (msgpack.packb(msgpack.ExtType(2, msgpack.packb(["x"]))), r"\[tag, value\]"),
        (msgpack.packb(msgpack.ExtType(2, msgpack.packb([1, 2]))), r"\[tag, value\]"),
        (msgpack.packb(msgpack.ExtType(2, msgpack.packb(["no.such.Tag", 1]))), "no.such.Tag"),
        (msgpack.packb({None: 1}), "map key of type NoneType"),
        (msgpack.packb({b"k": 1}, use_bin_type=True), "map key of type bytes"),
        (msgpack.packb(msgpack.Timestamp(2**40, 0)), "OverflowError"),
        (b"\xa2\xff\xfe", "UnicodeDecodeError"),
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # claims 4 G items in 5 bytes
        (b"\x91" * 5000 + b"\xc0", "nested too deeply"),
    ],
)
def test_foreign_and_malformed_bytes(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        CODEC.loads(data)


def test_registered_decoders_that_raise_or_bad_fields_give_codec_error() -> None:
    point = msgpack.ExtType(2, msgpack.packb(["test.point", "not a pair"]))
    with pytest.raises(CodecError, match=r"decoder registered for 'test\.point'") as caught:
        CODEC.loads(msgpack.packb(point))
    assert isinstance(caught.value.__cause__, TypeError)
    tag = f"{Plain.__module__}.Plain"
    for fields in ({"nope": 1}, {"n": 1}, [1], {1: "x"}):
        with pytest.raises(CodecError, match="Plain"):
            CODEC.loads(msgpack.packb(msgpack.ExtType(2, msgpack.packb([tag, fields]))))


def test_hostile_nesting_is_refused_within_a_small_stack() -> None:
    """Tuples nested far beyond MAX_DEPTH (each one a nested msgpack payload) are refused
    without exhausting even a 256 kB thread stack; MAX_DEPTH levels decode there."""
    hostile = msgpack.packb([])
    for _ in range(2000):
        hostile = msgpack.packb(msgpack.ExtType(1, hostile))
    deepest: Any = ()
    for _ in range(MAX_DEPTH - 1):
        deepest = (deepest,)
    legit = CODEC.dumps(deepest)
    results: list[Any] = []

    def run() -> None:
        results.append(same(CODEC.loads(legit), deepest))
        try:
            CODEC.loads(hostile)
        except CodecError as exc:
            results.append(str(exc))

    old = threading.stack_size(256 * 1024)
    try:
        thread = threading.Thread(target=run)
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join()
    assert results[0] is True
    assert "deeper than" in results[1]


def test_loads_takes_bytes_like_only() -> None:
    data = CODEC.dumps([1, "a"])
    assert CODEC.loads(bytearray(data)) == [1, "a"]
    assert CODEC.loads(memoryview(data)) == [1, "a"]
    with pytest.raises(CodecError, match="expected bytes"):
        CODEC.loads("a str")  # type: ignore[arg-type]


# -- what cannot be encoded --------------------------------------------------------------------


@dataclass
class Unregistered:
    x: int


class SubPlain(Plain):
    pass


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "set is not a supported type"),
        (frozenset(), "frozenset"),
        (object(), "object is not a supported type"),
        (lambda: None, "function"),
        (2**64, "int of 65 bits"),
        (-(2**63) - 1, "int of 64 bits"),
        (10**400, "int of 1329 bits"),
        (bytearray(b"x"), "bytearray"),
        (Unregistered(1), "Unregistered"),
        (SubPlain("x"), "SubPlain"),  # only the exact registered class
        (datetime(2024, 1, 1), "naive datetime"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "years 1-9999"),
        ({(1, 2): "tuple key"}, "dict key of type tuple"),
        ({True: "bool key"}, "dict key of type bool"),
        ({2**64: "big key"}, "dict key of type int"),
        ({1.5: "float key"}, "dict key of type float"),
        (Box({1}), "set"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unencodable_values_name_their_type(value: Any, named: str) -> None:
    with pytest.raises(CodecError, match=named):
        CODEC.dumps(value)


def test_unencodable_error_says_where() -> None:
    value = {"a": [1, Plain("x", extra=(0, {"deep": {1, 2}}))]}
    with pytest.raises(CodecError, match=r"value\['a'\]\[1\]\.extra\[1\]\['deep'\]: set"):
        CODEC.dumps(value)
    with pytest.raises(CodecError, match=r"cannot encode message\[0\]: set"):
        CODEC.encode_envelope("k", [set()], accepted_at=1.0)
    with pytest.raises(CodecError, match=r"value\.<test\.point encoded>\[0\]: set"):
        CODEC.dumps(Point(set(), 1))  # type: ignore[arg-type]


def test_encoder_that_raises_gives_codec_error() -> None:
    codec = Codec()
    codec.register(Point, encode=lambda p: 1 / 0, decode=lambda v: v)
    with pytest.raises(CodecError, match=r"encoder registered for .*ZeroDivisionError") as caught:
        codec.dumps([Point(1, 2)])
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_nesting_is_bounded_and_self_reference_is_refused() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert CODEC.loads(CODEC.dumps(deep)) == deep
    with pytest.raises(CodecError, match=f"deeper than {MAX_DEPTH}"):
        CODEC.dumps([deep])
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CodecError, match="contains itself"):
        CODEC.dumps(loop)


# -- size limit -------------------------------------------------------------------------------


def test_size_limit_both_ways() -> None:
    codec = make_codec(max_size=102)
    assert codec.max_size == 102
    assert codec.loads(codec.dumps("x" * 100)) == "x" * 100  # 2 bytes of header: 102
    with pytest.raises(CodecError, match="103 bytes encoded, the limit is 102 bytes"):
        codec.dumps("x" * 101)
    with pytest.raises(CodecError, match="too large"):
        codec.dumps([Plain("x" * 200)])  # refused as soon as the object is packed
    with pytest.raises(CodecError, match="103 bytes encoded, the limit is 102"):
        codec.loads(CODEC.dumps("x" * 101))
    with pytest.raises(CodecError, match="envelope too large"):
        codec.encode_envelope("k", "x" * 95, accepted_at=1.0)
    with pytest.raises(CodecError, match="envelope too large"):
        codec.decode_envelope(CODEC.encode_envelope("k", "x" * 95, accepted_at=1.0))
    with pytest.raises(CodecError, match="limit is 102"):
        codec.loads(bytearray(200))


@pytest.mark.parametrize("max_size", [0, -1, 1.5, True, "1"])
def test_bad_max_size(max_size: Any) -> None:
    with pytest.raises(CodecError, match="max_size"):
        Codec(max_size=max_size)


# -- registration -----------------------------------------------------------------------------


def test_duplicate_registrations_are_refused() -> None:
    codec = Codec()
    codec.register(Plain)
    with pytest.raises(CodecError, match="already registered"):
        codec.register(Plain, tag="another")
    with pytest.raises(CodecError, match=r"tag '.*\.Plain' is already registered for .*Plain"):
        codec.register(Frozen, tag=f"{Plain.__module__}.Plain")


@pytest.mark.parametrize("tag", ["", "has space", "new\nline", "x" * 201, 5, b"bytes"])
def test_bad_tags_are_refused(tag: Any) -> None:
    with pytest.raises(CodecError, match="bad tag"):
        Codec().register(Plain, tag=tag)


@dataclass
class NeedsInitVar:
    x: int
    seed: InitVar[int]


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (Point, {}, "not a dataclass"),
        (Point, {"encode": lambda p: 1}, "both encode= and decode="),
        (Point, {"decode": lambda v: v}, "both encode= and decode="),
        (Point, {"encode": 1, "decode": 2}, "callables"),
        (int, {}, "encoded natively"),
        (tuple, {}, "encoded natively"),
        (datetime, {"encode": str, "decode": str}, "encoded natively"),
        (Plain("x"), {}, "takes a class"),
        (NeedsInitVar, {}, "needs seed"),
    ],
)
def test_bad_registrations_are_refused(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        Codec().register(cls, **kwargs)


def test_unregistered_tag_cannot_be_decoded() -> None:
    data = CODEC.dumps({"m": Plain("x")})
    with pytest.raises(CodecError, match=r"unknown type tag '.*\.Plain'"):
        Codec().loads(data)


def test_codec_error_is_an_inorder_value_error() -> None:
    assert issubclass(CodecError, InorderError)
    assert issubclass(CodecError, ValueError)
    assert "registered=7" in repr(CODEC)
