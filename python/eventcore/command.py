"""The command protocol: declare streams, fold past events, decide new ones."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from abc import ABC, abstractmethod
from collections import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

from eventcore._core import CommandInit, stream_id
from eventcore.errors import BusinessRuleViolation, CommandError, ValidationError
from eventcore.stream import STREAM_FIELD, StreamId, stream
from eventcore.value import Value

__all__ = ["Command", "require"]

S = TypeVar("S")
E = TypeVar("E")


def require(condition: object, message: str) -> None:
    """Raise :class:`~eventcore.BusinessRuleViolation` with ``message`` unless ``condition``.

    Use it in ``handle``; a violation is never retried and writes nothing.
    """
    if not condition:
        raise BusinessRuleViolation(message)


class _Plan:
    """What a command class needs checked at construction, resolved on first use."""

    __slots__ = ("coercions", "converters", "stream_fields")

    stream_fields: tuple[str, ...]
    coercions: tuple[tuple[str, type], ...]
    converters: tuple[tuple[str, Callable[[Any, str], Any]], ...]

    def __init__(self, cls: type) -> None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:  # an unresolvable annotation is the user's bug
            raise CommandError(
                f"cannot resolve the field types of {cls.__qualname__}: {exc}"
            ) from exc
        self.stream_fields: tuple[str, ...] = tuple(
            f.name for f in dataclasses.fields(cls) if f.metadata.get(STREAM_FIELD)
        )
        coercions: list[tuple[str, type]] = []
        converters: list[tuple[str, Callable[[Any, str], Any]]] = []
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name)
            if f.name in self.stream_fields:
                continue
            if _is_value_type(hint):
                coercions.append((f.name, hint))
                continue
            convert = _converter(hint, cls, f.name)
            if convert is not None:
                converters.append((f.name, convert))
        self.coercions = tuple(coercions)
        self.converters = tuple(converters)


def _is_value_type(hint: Any) -> typing.TypeGuard[type]:
    return isinstance(hint, type) and issubclass(hint, (Value, StreamId))


def _mentions_value_type(hint: Any) -> bool:
    return _is_value_type(hint) or any(_mentions_value_type(a) for a in typing.get_args(hint))


# Containers whose Value items are validated, and the type the field then holds.
_CONTAINERS: dict[Any, type] = {
    tuple: tuple,
    list: list,
    frozenset: frozenset,
    set: set,
    abc.Sequence: tuple,
    abc.Set: frozenset,
}


def _converter(hint: Any, cls: type, name: str) -> Callable[[Any, str], Any] | None:
    """How to validate a field whose type holds value types: ``V | None``, ``tuple[V, ...]``,
    ``list[V]``, ``frozenset[V]``, ``set[V]``, ``Sequence[V]`` (as a tuple), ``Set[V]``
    (as a frozenset), nested. ``None`` when the type holds none. Other shapes that hold
    value types (``dict[str, V]``, ``V | W``, ``tuple[V, W]``) are refused: CommandError.
    """
    if _is_value_type(hint):
        kind: type = hint
        return lambda v, field: v if type(v) is kind else _coerce(kind, v, field)
    if not _mentions_value_type(hint):
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and len(args) == 2:
            inner = _converter(options[0], cls, name)
            assert inner is not None
            return lambda v, field: None if v is None else inner(v, field)
    elif origin in _CONTAINERS and (
        len(args) == 1 or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)
    ):
        item = _converter(args[0], cls, name)
        assert item is not None
        make = _CONTAINERS[origin]
        return lambda v, field: make(_items(v, field, item))
    raise CommandError(
        f"{cls.__qualname__}.{name}: the type {hint!r} holds value types in a shape eventcore "
        "cannot validate; use V, V | None, tuple[V, ...], list[V], frozenset[V], set[V] or "
        "Sequence[V] (nested as you like), or a plain type and validate in __post_init__"
    )


def _items(value: Any, field: str, item: Callable[[Any, str], Any]) -> Any:
    """Each item of a collection field, validated (``field[i]`` names a bad one)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError(field, "must be a collection", value)
    return (item(v, f"{field}[{i}]") for i, v in enumerate(value))


def _stream_value(value: Any, name: str) -> StreamId | tuple[StreamId, ...]:
    """Validate a stream field's value: one stream id, or a collection of them."""
    if isinstance(value, str):
        return stream_id(value, name)
    if isinstance(value, Iterable):
        return tuple(stream_id(v, name) for v in value)
    raise ValidationError(name, "must be a stream id or a collection of them", value)


def _coerce(kind: type, value: Any, name: str) -> Any:
    """Build a value type from a plain value, naming the field when it is invalid."""
    try:
        return kind(value)
    except ValidationError as exc:
        raise ValidationError(name, exc.reason, value) from None


def _fast_init(cls: type, plan: _Plan) -> Any:
    """A native ``__init__`` (``_core.CommandInit``) doing what the dataclass ``__init__``
    and :meth:`Command.__post_init__` do, in one pass without a Python frame.

    It binds the keyword-only parameters (the same TypeErrors), turns each str stream
    field into a StreamId in one call, coerces value-typed fields and runs the converters,
    stores the fields (as ``object.__setattr__`` does) and calls the class's own
    ``__post_init__`` with its InitVar values. ``None`` when the class does not fit
    (fields outside ``__init__``, no instance ``__dict__``).
    """
    fields = dataclasses.fields(cls)
    if not getattr(cls, "__dictoffset__", 0) or any(not f.init for f in fields):
        return None
    # InitVar pseudo-fields are parameters too, handed to __post_init__ (not stored).
    initvars = [
        f
        for f in cls.__dataclass_fields__.values()  # type: ignore[attr-defined]
        if f._field_type is dataclasses._FIELD_INITVAR  # type: ignore[attr-defined]
    ]
    kinds = dict(plan.coercions)
    converters = dict(plan.converters)

    def spec(f: dataclasses.Field[Any], stored: bool) -> tuple[str, int, Any, int, Any]:
        check = 0
        arg: Any = None
        if stored and f.name in plan.stream_fields:
            check = 1
        elif stored and f.name in kinds:
            check, arg = 2, kinds[f.name]
        elif stored and f.name in converters:
            check, arg = 3, converters[f.name]
        if f.default is not dataclasses.MISSING:
            return (f.name, check, arg, 1, f.default)
        if f.default_factory is not dataclasses.MISSING:
            return (f.name, check, arg, 2, f.default_factory)
        return (f.name, check, arg, 0, None)

    post_init = getattr(cls, "__post_init__", None)
    return CommandInit(
        cls.__qualname__,
        [spec(f, True) for f in fields],
        [spec(f, False) for f in initvars],
        post_init is not None and post_init is not Command.__post_init__,
        _stream_value,
        inspect.signature(cls.__init__),  # type: ignore[misc]
    )


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(stream,))
class Command(ABC, Generic[S, E]):
    """Base class of commands: an immutable request that may write to the streams it declares.

    Subclasses are frozen, keyword-only dataclasses automatically. Declare the streams the
    command reads and may write with :func:`~eventcore.stream`; fields typed with a
    :class:`~eventcore.Value` type are validated (and plain values converted) when the
    command is built, so ``handle`` only ever sees valid values::

        class Deposit(Command[Account, AccountEvent]):
            account: StreamId = stream()
            amount: Money

            def initial_state(self) -> Account: return Account()
            def apply(self, state, event, stream_id): ...
            def handle(self, state): return [(self.account, Deposited(self.amount))]

    The executor reads every declared stream, folds their events (in global order) through
    :meth:`apply` starting from :meth:`initial_state`, asks :meth:`discover` for more streams
    (read and folded too), calls :meth:`handle`, and appends what it returns atomically.
    """

    _plan: ClassVar[_Plan | None] = None
    max_discovery_rounds: ClassVar[int] = 8
    """How many times :meth:`discover` may add streams before the command fails."""
    state_cache: ClassVar[bool] = True
    """Whether the executor may keep this class's folded state between commands (see
    :class:`~eventcore.state_cache.StateCache`); ``False`` folds every stream in full every time."""
    state_key: ClassVar[tuple[str, ...] | None] = None
    """The fields besides the streams that :meth:`initial_state`, :meth:`apply` and
    :meth:`discover` depend on: commands differing in them never share a cached state.
    ``None`` (the default) finds them in those methods' bytecode, falling back to every
    field when ``self`` is used in a way it cannot follow."""
    snapshot_every: ClassVar[int | None] = None
    """Events folded beyond the last durable snapshot before the next one is written;
    ``None``: the store's default (see :mod:`eventcore.snapshot`), ``0``: never."""
    snapshot_version: ClassVar[int] = 1
    """The state's schema version in snapshots: bump it when the state class changes."""
    snapshot_state: ClassVar[Any] = None
    """The type snapshots decode into; ``None``: the ``S`` of ``Command[S, E]``."""
    _query_boundary: ClassVar[bool] = False
    """True for a :class:`~eventcore.boundary.QueryCommand` (the command machine runs it as
    a query boundary)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(frozen=True, kw_only=True, eq=True, repr=True)(cls)
            # Let an explicit @dataclass(frozen=True, kw_only=True) on top work too: it must
            # still see the stream() markers, and may not find __setattr__ already defined
            # (frozenness comes from Command itself).
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if f.metadata.get(STREAM_FIELD) and f.name not in cls.__dict__:
                    setattr(cls, f.name, f)
            for name in ("__setattr__", "__delattr__"):
                if name in cls.__dict__:
                    delattr(cls, name)
        cls._plan = None

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __post_init__(self, *initvars: Any) -> None:
        # ``initvars``: the values of InitVar fields, when the subclass has no
        # __post_init__ of its own to take them.
        cls = type(self)
        plan = cls._plan
        if plan is None:
            plan = cls._plan = _Plan(cls)
            fast = _fast_init(cls, plan)
            if fast is not None:
                cls.__init__ = fast  # type: ignore[method-assign]
        set_ = object.__setattr__
        for name in plan.stream_fields:
            value = getattr(self, name)
            if type(value) is not StreamId:
                set_(self, name, _stream_value(value, name))
        for name, kind in plan.coercions:
            value = getattr(self, name)
            if type(value) is not kind:
                set_(self, name, _coerce(kind, value, name))
        for name, convert in plan.converters:
            set_(self, name, convert(getattr(self, name), name))

    def streams(self) -> list[StreamId]:
        """The streams this command declares, in field order, without duplicates."""
        plan = type(self)._plan
        assert plan is not None
        fields = plan.stream_fields
        if len(fields) == 1:
            value = getattr(self, fields[0])
            return [value] if type(value) is StreamId else list(dict.fromkeys(value))
        out: dict[StreamId, None] = {}
        for name in fields:
            value = getattr(self, name)
            if type(value) is StreamId:
                out[value] = None
            else:
                out.update(dict.fromkeys(value))
        return list(out)

    @abstractmethod
    def initial_state(self) -> S:
        """The state before any event is folded (a fresh object each call)."""

    @abstractmethod
    def apply(self, state: S, event: E, stream_id: str) -> S:
        """Fold one past ``event`` of ``stream_id`` into ``state`` and return the new state.

        ``stream_id`` tells a multi-stream command which stream the event came from.
        """

    @abstractmethod
    def handle(self, state: S) -> Sequence[tuple[str, E]]:
        """Check the business rules against ``state`` and return the new events.

        Each item is ``(stream_id, event)``; the stream must be one the command declared or
        discovered. Raise with :func:`require` to reject the command.
        """

    def discover(self, state: S) -> Iterable[str]:
        """Streams to read in addition to the declared ones, after seeing ``state``.

        Called after each fold until it names no new stream (at most
        :attr:`max_discovery_rounds` times). Each stream is read once and its version is
        checked on append like every declared stream. The default discovers nothing.
        """
        return ()
