"""Validated value types: "parse, don't validate" for domain values."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, Self

from eventcore.errors import ValidationError

__all__ = ["Value"]

_Check = Callable[[Any], "str | None"]


class Value:
    """Base class for a domain value type that validates itself once, at construction.

    Combine it with the builtin the value is made of, ``Value`` first, and state the
    constraints as class keywords::

        class Money(Value, int, gt=0):
            '''An amount in cents; always positive.'''

        class AccountId(Value, str, pattern=r"acc-[0-9]+"):
            '''An account number such as ``acc-42``.'''

    Constraints: ``gt``, ``ge``, ``lt``, ``le`` (numbers), ``min_length``, ``max_length``,
    ``pattern`` (a full match, for ``str``). For any other rule, override the classmethod
    ``check(value)`` and raise ``ValueError`` with the reason. A rejected value raises
    :class:`~eventcore.ValidationError` naming the type and the reason. Instances are
    instances of the builtin too, so they encode as the builtin in events, and event
    fields typed with a value type are validated again when decoded.

    Conversion is strict: a value is built only from its own kind of input, never parsed
    from text or truncated. ``int`` values take an ``int`` or a whole ``float`` (``5.0``,
    not ``5.7``; never a ``bool`` or a ``str``); ``float`` values a ``float`` or an ``int``
    (not a ``bool`` or a ``str``); ``str`` values a ``str``; ``bytes`` values ``bytes``;
    ``Decimal`` values a ``Decimal``, an ``int`` or a ``str`` (the exact way to write a
    decimal; not a ``float``, whose binary value is inexact, and not NaN or infinity).
    Anything else is a ``ValidationError``.
    """

    __slots__ = ()
    _checks: ClassVar[tuple[_Check, ...]] = ()
    _accepts: ClassVar[tuple[type, ...]] = ()
    """The input types taken, the builtin first (subclasses too, never bool); () = any."""
    _accepts_text: ClassVar[str] = ""
    _exact: ClassVar[type | None] = None
    """The input type taken as is (``_accepts[0]``): no conversion checks for it."""
    _make: ClassVar[Any] = None
    """The builtin base's ``__new__``, found once per class (what ``super()`` finds)."""
    _own_check: ClassVar[bool] = False
    """Whether the class (or a base below ``Value``) overrides :meth:`check`."""
    _bounds: ClassVar[tuple[tuple[str, Any], ...] | None] = ()
    """Its checks as ``(op, bound)`` pairs (``op``: ``gt``/``ge``/``lt``/``le``) when those
    are all it checks and it keeps ``Value``'s constructor; else ``None``. A command's
    native ``__init__`` checks such a type's exact input itself (``command_init.rs``)."""

    def __init_subclass__(
        cls,
        *,
        gt: Any = None,
        ge: Any = None,
        lt: Any = None,
        le: Any = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        checks: list[_Check] = list(cls._checks)
        bounds = cls._bounds
        if bounds is not None and (min_length, max_length, pattern) != (None, None, None):
            bounds = None
        if bounds is not None:
            given = (("gt", gt), ("ge", ge), ("lt", lt), ("le", le))
            bounds = bounds + tuple((op, b) for op, b in given if b is not None)
        if gt is not None:
            checks.append(lambda v: None if v > gt else f"must be greater than {gt}")
        if ge is not None:
            checks.append(lambda v: None if v >= ge else f"must be at least {ge}")
        if lt is not None:
            checks.append(lambda v: None if v < lt else f"must be less than {lt}")
        if le is not None:
            checks.append(lambda v: None if v <= le else f"must be at most {le}")
        if min_length is not None:
            checks.append(
                lambda v: None if len(v) >= min_length else f"must have at least {min_length} items"
            )
        if max_length is not None:
            checks.append(
                lambda v: None if len(v) <= max_length else f"must have at most {max_length} items"
            )
        if pattern is not None:
            compiled = re.compile(pattern)
            checks.append(
                lambda v: None if compiled.fullmatch(v) else f"must match the pattern {pattern!r}"
            )
        cls._accepts, cls._accepts_text = _accepted_inputs(cls)
        if cls._accepts[:1] and _is_decimal(cls._accepts[0]) and _finite not in checks:
            checks.insert(0, _finite)  # first: an ordering check on NaN would raise
        cls._checks = tuple(checks)
        # Found once here rather than on every construction (values are built per command).
        cls._exact = cls._accepts[0] if cls._accepts else None
        cls._make = staticmethod(super().__new__)
        own = getattr(cls.check, "__func__", None)  # None: a staticmethod, also its own
        cls._own_check = own is not Value.check.__func__  # type: ignore[attr-defined]
        plain = (
            cls.__new__ is Value.__new__
            and cls.__init__ is object.__init__
            and cls._exact is not None
            and not cls._own_check
            and _finite not in checks
        )
        cls._bounds = bounds if plain else None

    def __new__(cls, value: Any) -> Self:
        """Build and validate; raises ValidationError naming the type and the reason."""
        if type(value) is not cls._exact and (accepts := cls._accepts):  # a conversion: exact?
            if isinstance(value, bool) or not isinstance(value, accepts):
                raise ValidationError(
                    cls.__name__, f"must be {cls._accepts_text}, not {type(value).__name__}", value
                )
            if accepts[0] is int and isinstance(value, float) and not value.is_integer():
                raise ValidationError(cls.__name__, "must be a whole number", value)
        try:
            obj: Self = cls._make(cls, value)
        except _invalid_operation():
            raise ValidationError(cls.__name__, "must be a decimal number", value) from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ValidationError(cls.__name__, str(exc), value) from None
        for check in cls._checks:
            reason = check(obj)
            if reason is not None:
                raise ValidationError(cls.__name__, reason, value)
        if cls._own_check:
            try:
                cls.check(obj)
            except ValueError as exc:
                raise ValidationError(cls.__name__, str(exc), value) from None
        return obj

    @classmethod
    def check(cls, value: Any) -> None:
        """Raise ``ValueError`` with a reason when ``value`` is not acceptable (override)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._builtin_value(),))

    def _builtin_value(self) -> Any:
        for base in type(self).__mro__:
            if base in (int, str, float, bytes) or base.__module__ == "decimal":
                return base(self)
        return self


# decimal is not imported here (``import eventcore`` does not load it): a class built on
# Decimal has loaded it already, and only such a class raises InvalidOperation.
def _is_decimal(base: type) -> bool:
    return base.__module__ == "decimal" and base.__name__ == "Decimal"


def _invalid_operation() -> type[Exception]:
    # Named in an ``except`` clause, so it runs only when an error is being handled.
    import decimal

    return decimal.InvalidOperation


def _finite(value: Any) -> str | None:
    return None if value.is_finite() else "must be a finite number"


def _accepted_inputs(cls: type) -> tuple[tuple[type, ...], str]:
    """The input types a value class built on a builtin takes (see :class:`Value`)."""
    for base in cls.__mro__:
        if base is int:  # a float only when whole: checked in __new__
            return (int, float), "an int"
        if base is float:
            return (float, int), "a float or an int"
        if base is str:
            return (str,), "a str"
        if base is bytes:
            return (bytes,), "bytes"
        if _is_decimal(base):
            return (base, int, str), "a Decimal, an int or a str"
    return (), ""  # some other base: its constructor decides
