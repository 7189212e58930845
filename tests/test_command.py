"""The command protocol: frozen keyword-only dataclasses, stream fields, validated values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    Command,
    CommandError,
    EventCoreError,
    InvalidStreamId,
    StreamId,
    ValidationError,
    Value,
    require,
    stream,
)

from .bank_domain import Account, AccountNo, Deposit, EmitTo, Money, OpenAccount, Transfer


class Audit(Command[int, Any]):
    """A command with a tuple-of-streams field and a validated non-stream field."""

    primary: StreamId = stream()
    others: tuple[StreamId, ...] = stream()
    owner: AccountNo
    note: str = ""

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + 1

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return []


def test_commands_are_frozen_keyword_only_dataclasses() -> None:
    cmd = Deposit(account="acc-1", amount=5)
    assert dataclasses.is_dataclass(cmd)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.amount = Money(6)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Deposit("acc-1", 5)  # type: ignore[misc]
    assert cmd == Deposit(account="acc-1", amount=Money(5))
    assert "acc-1" in repr(cmd)


def test_stream_fields_become_validated_stream_ids() -> None:
    cmd = Deposit(account="  acc-1  ", amount=5)
    assert cmd.account == "acc-1"
    assert type(cmd.account) is StreamId
    audit = Audit(primary="p", others=["o-1", " o-2 "], owner="acc-3")
    assert audit.others == ("o-1", "o-2")
    assert all(type(s) is StreamId for s in audit.others)


def test_invalid_stream_field_names_the_field() -> None:
    with pytest.raises(InvalidStreamId) as info:
        Deposit(account="  ", amount=5)
    assert info.value.field == "account"
    assert info.value.value == "  "
    with pytest.raises(InvalidStreamId) as info:
        Audit(primary="p", others=["ok", "bad\x00"], owner="acc-1")
    assert info.value.field == "others"
    with pytest.raises(ValidationError) as verr:
        Deposit(account=42, amount=5)  # type: ignore[arg-type]
    assert verr.value.field == "account"


def test_value_fields_are_converted_and_validated() -> None:
    cmd = Deposit(account="acc-1", amount=5)
    assert type(cmd.amount) is Money
    for bad in (0, -1, "x"):
        with pytest.raises(ValidationError) as info:
            Deposit(account="acc-1", amount=bad)  # type: ignore[arg-type]
        assert info.value.field == "amount"
        assert info.value.value == bad
    with pytest.raises(ValidationError) as info:
        Audit(primary="p", others=(), owner="nope")
    assert info.value.field == "owner"
    assert "pattern" in info.value.reason


class _Bounded(Value, float, gt=0.0, le=1.0):
    """Order bounds only: a command's native __init__ checks them itself."""


class _Custom(_Bounded):
    """Bounds plus a check of its own: its constructor decides."""

    @classmethod
    def check(cls, value: float) -> None:
        if value == 0.5:
            raise ValueError("not a half")


class _Fields(Command[None, Any]):
    """A command that only holds its fields (these tests build commands, never run them)."""

    def initial_state(self) -> None:
        return None

    def apply(self, state: None, event: Any, stream_id: str) -> None:
        return None

    def handle(self, state: None) -> list[tuple[str, Any]]:
        return []


class _Bounds(_Fields):
    """One field of each kind of value type."""

    bounded: _Bounded
    custom: _Custom
    pattern: AccountNo


class _Digit(Value, int, gt=0, lt=10):
    """An int value type with bounds only: built natively by the builtin's own slot."""


class _Digits(_Fields):
    digit: _Digit


@pytest.mark.parametrize("value", [1, 9, 0, 10, -3, 2**70, True, 3.0, 2.5, "3", None])
def test_int_value_fields_are_built_as_the_type_builds_them(value: Any) -> None:
    try:
        want: Any = _Digit(value)
    except ValidationError as exc:
        want = exc
    try:
        got: Any = _Digits(digit=value).digit
    except ValidationError as exc:
        got = exc
    if isinstance(want, ValidationError):
        assert isinstance(got, ValidationError)
        assert (got.field, got.reason) == ("digit", want.reason)
    else:
        assert type(got) is _Digit and got == want and repr(got) == repr(want)


def test_value_fields_give_what_the_value_type_gives() -> None:
    # Bounds-only types are checked natively (Value._bounds); the rest by the type itself:
    # the same instances and the same errors either way.
    assert _Bounded._bounds == (("gt", 0.0), ("le", 1.0)) and _Custom._bounds is None
    cmd = _Bounds(bounded=1.0, custom=0.25, pattern="acc-1")
    assert type(cmd.bounded) is _Bounded and cmd.bounded == 1.0
    assert type(cmd.custom) is _Custom and type(cmd.pattern) is AccountNo
    assert type(_Bounds(bounded=1, custom=1, pattern="acc-1").bounded) is _Bounded
    cases = [
        ({"bounded": 0.0}, "bounded", "greater than 0"),
        ({"bounded": 1.5}, "bounded", "at most 1"),
        ({"bounded": float("nan")}, "bounded", "greater than 0"),
        ({"bounded": True}, "bounded", "must be a float"),
        ({"custom": 0.5}, "custom", "not a half"),
        ({"custom": 2.0}, "custom", "at most 1"),
        ({"pattern": "x"}, "pattern", "pattern"),
    ]
    for change, field, reason in cases:
        args: dict[str, Any] = {"bounded": 0.5, "custom": 0.25, "pattern": "acc-1"} | change
        with pytest.raises(ValidationError) as info:
            _Bounds(**args)
        assert info.value.field == field and reason in info.value.reason
        assert info.value.value is change[field]


def test_already_valid_values_are_kept() -> None:
    amount = Money(9)
    assert Deposit(account="a", amount=amount).amount is amount


def test_streams_lists_declared_streams_in_field_order_without_duplicates() -> None:
    assert list(Transfer(source="a", target="b", amount=1).streams()) == ["a", "b"]
    assert list(Transfer(source="a", target="a", amount=1).streams()) == ["a"]
    audit = Audit(primary="p", others=["x", "p", "y", "x"], owner="acc-1")
    assert list(audit.streams()) == ["p", "x", "y"]
    assert list(EmitTo(declared=()).streams()) == []


def test_inherited_stream_fields_are_declared() -> None:
    assert list(OpenAccount(account="acc-7", owner="ann").streams()) == ["acc-7"]


def test_default_discover_finds_nothing() -> None:
    assert list(Deposit(account="a", amount=1).discover(Account())) == []


def test_abstract_methods_must_be_implemented() -> None:
    class Incomplete(Command[int, Any]):
        s: StreamId = stream()

        def initial_state(self) -> int:
            return 0

    with pytest.raises(TypeError):
        Incomplete(s="x")  # type: ignore[abstract]


def test_require() -> None:
    require(True, "never raised")
    require(1, "never raised")
    with pytest.raises(BusinessRuleViolation) as info:
        require(0, "must be positive")
    assert info.value.message == "must be positive"
    assert str(info.value) == "must be positive"
    assert isinstance(info.value, EventCoreError)


def test_subclass_may_be_an_explicit_dataclass() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Explicit(Command[int, Any]):
        target: StreamId = stream()  # noqa: RUF009
        amount: Money

        def initial_state(self) -> int:
            return 0

        def apply(self, state: int, event: Any, stream_id: str) -> int:
            return state

        def handle(self, state: int) -> list[tuple[str, Any]]:
            return []

    cmd = Explicit(target=" t ", amount=3)
    assert cmd.target == "t" and type(cmd.amount) is Money
    assert list(cmd.streams()) == ["t"]


# --- InitVar fields -------------------------------------------------------------------


class Scaled(Command[int, Any]):
    """A command with an InitVar that its __post_init__ consumes."""

    account: StreamId = stream()
    amount: Money
    scale: dataclasses.InitVar[int] = 1

    def __post_init__(self, scale: int) -> None:
        super().__post_init__()
        object.__setattr__(self, "scaled", self.amount * scale)

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return []


def test_initvar_fields_work_on_every_construction() -> None:
    # The first construction switches the class to a generated __init__, which used to
    # drop InitVar parameters: the second construction raised TypeError.
    first = Scaled(account="a", amount=2, scale=3)
    second = Scaled(account="a", amount=5, scale=4)
    default = Scaled(account="a", amount=5)
    assert (first.scaled, second.scaled, default.scaled) == (6, 20, 5)  # type: ignore[attr-defined]
    assert "scale" not in vars(second)  # an InitVar is not stored
    with pytest.raises(ValidationError):
        Scaled(account="a", amount=0, scale=2)


def test_initvar_without_a_post_init_of_its_own() -> None:
    class Quiet(Scaled):
        def __post_init__(self, scale: int) -> None:  # consumes it, keeps validation
            Command.__post_init__(self)

    class Bare(Command[int, Any]):
        account: StreamId = stream()
        hint: dataclasses.InitVar[str] = ""

        def initial_state(self) -> int:
            return 0

        def apply(self, state: int, event: Any, stream_id: str) -> int:
            return state

        def handle(self, state: int) -> list[tuple[str, Any]]:
            return []

    for _ in range(2):
        assert Quiet(account="a", amount=1, scale=9).amount == 1
        assert Bare(account="b", hint="x").account == "b"


# --- nested and optional value fields ------------------------------------------------


class Order(Command[int, Any]):
    """Value types inside containers and optionals."""

    order: StreamId = stream()
    quantities: tuple[Money, ...] = ()
    discount: Money | None = None
    lines: list[Money | None] = dataclasses.field(default_factory=list)
    tags: frozenset[AccountNo] = frozenset()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return []


@pytest.mark.parametrize("attempt", [1, 2])  # the first and the generated __init__
def test_nested_and_optional_value_fields_are_validated(attempt: int) -> None:
    order = Order(order="o", quantities=[1, 2], discount=3, lines=[None, 4], tags={"acc-1"})
    assert order.quantities == (1, 2) and all(type(q) is Money for q in order.quantities)
    assert type(order.discount) is Money
    assert order.lines == [None, 4] and type(order.lines[1]) is Money
    assert order.tags == frozenset({"acc-1"}) and type(next(iter(order.tags))) is AccountNo
    assert Order(order="o").discount is None
    for kwargs, field in [
        ({"quantities": (1, 0)}, "quantities[1]"),
        ({"quantities": (True,)}, "quantities[0]"),
        ({"quantities": "12"}, "quantities"),
        ({"discount": 0}, "discount"),
        ({"discount": "3"}, "discount"),
        ({"lines": [1, -1]}, "lines[1]"),
        ({"tags": {"nope"}}, "tags[0]"),
    ]:
        with pytest.raises(ValidationError) as info:
            Order(order="o", **kwargs)
        assert info.value.field == field, kwargs


def test_value_types_in_shapes_that_cannot_be_validated_are_refused() -> None:
    class ByName(Command[int, Any]):
        order: StreamId = stream()
        amounts: dict[str, Money]

        def initial_state(self) -> int:
            return 0

        def apply(self, state: int, event: Any, stream_id: str) -> int:
            return state

        def handle(self, state: int) -> list[tuple[str, Any]]:
            return []

    with pytest.raises(CommandError, match=r"ByName\.amounts.*tuple\[V, \.\.\.\]"):
        ByName(order="o", amounts={"x": Money(1)})


def test_value_fields_are_strict() -> None:
    # No bool for an int, no text parsed into a number.
    for amount in (True, "7", 5.5, None):
        with pytest.raises(ValidationError) as info:
            Deposit(account="a", amount=amount)
        assert info.value.field == "amount"
    assert Deposit(account="a", amount=7).amount == 7


# --- every check on every construction ----------------------------------------------


class _Text(str):
    """A str subclass (as a str enum or a framework's string type would be)."""


def _fresh_command_class() -> type[Any]:
    """A new class per call: its first construction takes the dataclass path, later
    ones the generated ``__init__``; both must check the same things."""

    class Ship(Command[int, Any]):
        order: StreamId = stream()
        depots: tuple[StreamId, ...] = stream()
        amount: Money
        note: str = ""
        scale: dataclasses.InitVar[int] = 1

        def __post_init__(self, scale: int) -> None:
            super().__post_init__()
            if scale < 1:
                raise ValidationError("scale", "must be positive", scale)
            object.__setattr__(self, "scaled", self.amount * scale)

        def initial_state(self) -> int:
            return 0

        def apply(self, state: int, event: Any, stream_id: str) -> int:
            return state

        def handle(self, state: int) -> list[tuple[str, Any]]:
            return []

    return Ship


@pytest.mark.parametrize("construction", [1, 2, 3])
def test_every_construction_keeps_every_check(construction: int) -> None:
    ship = _fresh_command_class()
    for _ in range(construction - 1):
        ship(order="warm-up", depots=(), amount=1)
    made = ship(order=_Text("  o-1 "), depots=["d-1", _Text(" d-2")], amount=2, scale=3)
    assert made.order == "o-1" and type(made.order) is StreamId
    assert made.depots == ("d-1", "d-2") and all(type(d) is StreamId for d in made.depots)
    assert type(made.amount) is Money and made.scaled == 6
    assert "scale" not in vars(made)
    sid = StreamId("o-2")
    assert ship(order=sid, depots=(), amount=1).order is sid
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.note = "x"
    bad_streams: list[tuple[dict[str, Any], str]] = [
        ({"order": " "}, "order"),
        ({"order": "a\x00"}, "order"),
        ({"order": "a\ud800"}, "order"),
        ({"order": "x" * 256}, "order"),
        ({"depots": ["ok", "\x01"]}, "depots"),
    ]
    for kwargs, field in bad_streams:
        with pytest.raises(InvalidStreamId) as info:
            ship(**{"order": "o", "depots": (), "amount": 1, **kwargs})
        assert info.value.field == field, kwargs
    for kwargs, field in [
        ({"order": 42}, "order"),
        ({"amount": 0}, "amount"),
        ({"amount": "1"}, "amount"),
        ({"scale": 0}, "scale"),
    ]:
        with pytest.raises(ValidationError) as verr:
            ship(**{"order": "o", "depots": (), "amount": 1, **kwargs})
        assert verr.value.field == field, kwargs
    with pytest.raises(TypeError, match="depots"):
        ship(order="o", amount=1)
    with pytest.raises(TypeError, match="colour"):
        ship(order="o", depots=(), amount=1, colour="red")
    with pytest.raises(TypeError):
        ship("o", (), 1)


def test_generated_init_keeps_the_dataclass_face() -> None:
    import copy
    import inspect
    import pickle

    ship = _fresh_command_class()
    for _ in range(2):  # the dataclass __init__, then the generated one
        made = ship(order="o", depots=("d",), amount=2)
    params = inspect.signature(ship).parameters
    assert list(params) == ["order", "depots", "amount", "note", "scale"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    replaced = dataclasses.replace(made, order=" o-2 ", amount=3)
    assert replaced.order == "o-2" and type(replaced.order) is StreamId
    assert type(replaced.amount) is Money
    with pytest.raises(ValidationError):
        dataclasses.replace(made, amount=0)
    with pytest.raises(TypeError, match=r"missing 2 required keyword-only arguments: 'order' and"):
        ship(depots=())
    deposit = Deposit(account=" acc-1 ", amount=5)
    for twin in (copy.copy(deposit), copy.deepcopy(deposit), pickle.loads(pickle.dumps(deposit))):
        assert twin == deposit and type(twin.account) is StreamId
