"""Validated value types: validate once at construction, behave as the builtin afterwards."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from decimal import Decimal

import msgspec
import pytest

from eventcore import EventRegistry, SerializationError, ValidationError, Value

from .bank_domain import AccountNo, Money


class Percent(Value, int, ge=0, le=100):
    """0..100."""


class Ratio(Value, float, gt=0.0, lt=1.0):
    """Strictly between 0 and 1."""


class Code(Value, str, min_length=2, max_length=4):
    """Two to four characters."""


class Even(Value, int):
    """An even integer (custom check)."""

    @classmethod
    def check(cls, value: int) -> None:
        if value % 2:
            raise ValueError("must be even")


class SmallMoney(Money, lt=1000):
    """Inherits ``gt=0`` from Money and adds ``lt=1000``."""


def test_valid_values_are_instances_of_the_builtin() -> None:
    m = Money(5)
    assert m == 5
    assert isinstance(m, int) and isinstance(m, Money)
    assert m + 1 == 6
    assert AccountNo("acc-42") == "acc-42"
    assert isinstance(AccountNo("acc-42"), str)
    assert Ratio(0.5) == 0.5
    assert Code("ab") == "ab"
    assert Percent(0) == 0 and Percent(100) == 100
    assert Even(4) == 4


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (Money, 0, "greater than 0"),
        (Money, -3, "greater than 0"),
        (Percent, -1, "at least 0"),
        (Percent, 101, "at most 100"),
        (Ratio, 0.0, "greater than 0"),
        (Ratio, 1.0, "less than 1"),
        (Code, "a", "at least 2"),
        (Code, "abcde", "at most 4"),
        (AccountNo, "acc-", "pattern"),
        (AccountNo, "xacc-1", "pattern"),
        (AccountNo, "acc-1x", "pattern"),
        (Even, 3, "must be even"),
        (SmallMoney, 0, "greater than 0"),
        (SmallMoney, 1000, "less than 1000"),
    ],
)
def test_invalid_values_raise_validation_error_with_field_and_reason(
    kind: type, raw: object, reason: str
) -> None:
    with pytest.raises(ValidationError) as info:
        kind(raw)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == kind.__name__
    assert reason in err.reason
    assert err.value == raw
    assert kind.__name__ in str(err) and reason in str(err)


def test_unconvertible_input_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        Money("lots")
    assert info.value.field == "Money"
    assert info.value.value == "lots"
    with pytest.raises(ValidationError):
        Money(None)


def test_pattern_is_a_full_match() -> None:
    assert AccountNo("acc-007") == "acc-007"
    with pytest.raises(ValidationError):
        AccountNo("acc-7\n")


def test_subclass_keeps_parent_constraints() -> None:
    assert SmallMoney(999) == 999
    assert issubclass(SmallMoney, Money)
    with pytest.raises(ValidationError):
        SmallMoney(-1)


def test_values_pickle_and_revalidate() -> None:
    m = Money(12)
    back = pickle.loads(pickle.dumps(m))
    assert back == 12 and type(back) is Money
    acc = pickle.loads(pickle.dumps(AccountNo("acc-1")))
    assert type(acc) is AccountNo and acc == "acc-1"


def test_values_encode_as_the_builtin_and_revalidate_on_decode() -> None:
    registry = EventRegistry()

    @dataclass(frozen=True)
    class Paid:
        amount: Money
        account: AccountNo

    registry.register("value-test.Paid", Paid)
    name, payload = registry.encode(Paid(Money(7), AccountNo("acc-9")))
    assert name == "value-test.Paid"
    assert msgspec.msgpack.decode(payload) == {"amount": 7, "account": "acc-9"}
    decoded = registry.decode(name, payload)
    assert decoded == Paid(Money(7), AccountNo("acc-9"))
    assert type(decoded.amount) is Money
    assert type(decoded.account) is AccountNo

    bad = msgspec.msgpack.encode({"amount": 0, "account": "acc-9"})
    with pytest.raises(SerializationError) as info:
        registry.decode(name, bad)
    assert info.value.event_type == "value-test.Paid"
    bad = msgspec.msgpack.encode({"amount": 3, "account": "nope"})
    with pytest.raises(SerializationError):
        registry.decode(name, bad)


def test_lossy_conversion_is_rejected() -> None:
    # "Parse, don't validate": 5.7 is not an amount in whole cents; truncating it to 5
    # would silently change the value the caller asked for.
    with pytest.raises(ValidationError) as info:
        Money(5.7)
    assert info.value.field == "Money"
    assert Money(5.0) == 5  # an exact conversion is fine


class Price(Value, Decimal, ge=0):
    """A decimal price."""


class Blob(Value, bytes, max_length=4):
    """A few bytes."""


class Weight(Value, float, ge=0):
    """A weight in kilograms."""


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (Money, True),  # a bool is not an amount
        (Money, False),
        (Money, "7"),  # text is not parsed into a number
        (Money, 7.5),
        (Ratio, True),
        (Ratio, "0.5"),
        (Code, 12),
        (Code, b"ab"),
        (Price, 0.1),  # a float's binary value is not the decimal it looks like
        (Price, True),
        (Price, "abc"),
        (Price, "NaN"),
        (Price, "Infinity"),
        (Blob, "ab"),
    ],
)
def test_conversion_is_strict(kind: type, raw: object) -> None:
    with pytest.raises(ValidationError) as info:
        kind(raw)
    assert info.value.field == kind.__name__
    assert info.value.value is raw


def test_strict_conversion_keeps_the_exact_ones() -> None:
    assert Money(7) == 7 and type(Money(7)) is Money
    assert Money(Money(7)) == 7
    assert Ratio(0.25) == 0.25 and type(Ratio(0.25)) is Ratio
    assert Weight(2) == 2.0 and type(Weight(2)) is Weight  # an int is an exact float
    assert Price("1.10") == Decimal("1.10") and str(Price("1.10")) == "1.10"
    assert Price(3) == Decimal(3)
    assert Price(Decimal("2.5")) == Decimal("2.5")
    assert Blob(b"ab") == b"ab"
    with pytest.raises(ValidationError, match="must be an int, not bool"):
        Money(True)


class EvenPercent(Even, ge=0, le=100):
    """Inherits Even's own check and adds bounds."""


class Odd(Value, int):
    """A custom check written as a staticmethod."""

    @staticmethod
    def check(value: int) -> None:  # type: ignore[override]
        if not value % 2:
            raise ValueError("must be odd")


def test_an_inherited_or_static_check_still_runs() -> None:
    # The value types find their base's constructor and whether `check` is overridden once,
    # per class: an inherited override and a staticmethod override must still be called.
    assert EvenPercent(42) == 42 and type(EvenPercent(42)) is EvenPercent
    with pytest.raises(ValidationError, match="must be even"):
        EvenPercent(41)
    with pytest.raises(ValidationError, match="at most 100"):
        EvenPercent(102)
    assert Odd(3) == 3
    with pytest.raises(ValidationError, match="must be odd"):
        Odd(4)
    # The exact builtin is taken as is; a whole float is still converted, a bool refused.
    assert type(Money(5.0)) is Money and Money(5.0) == 5
    with pytest.raises(ValidationError):
        Money(True)
