"""The encrypting codec: personal fields sealed per subject, the rest left to the inner codec."""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, get_type_hints

import msgspec

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "eventcore.shredding needs cryptography: pip install 'eventcore-py[crypto]'"
    ) from exc

from eventcore._core import dec_hook, enc_hook
from eventcore.errors import SerializationError
from eventcore.registry import Codec, MsgpackCodec
from eventcore.shredding._errors import CiphertextTampered
from eventcore.shredding._keys import KeyStore

__all__ = ["Personal", "ShreddingCodec", "Subject", "subject"]

T = TypeVar("T")

_NO_PLACEHOLDER: Any = object()
_SUBJECT_FN = "__eventcore_subject__"
_FORMAT = b"\x01"  # the sealed fields: format byte, 12-byte nonce, ciphertext, 16-byte tag
_AAD = b"eventcore.shredding\x00"  # and the subject: a sealed value opens only for it
_AEADS_MAX = 4096  # subjects whose AESGCM object is kept (making one costs a decryption or two)
_NONCE = 12
_MAX_SUBJECT = 1024  # it travels as a NOTIFY payload when forgotten (8000 bytes at most)


class Personal:
    """Marks a field as personal data: ``name: Annotated[str, Personal]``.

    The field is encrypted with its subject's key; once the subject is forgotten it reads
    as its placeholder: ``Annotated[str, Personal(placeholder="(erased)")]`` names one,
    else the default placeholder of the field's type (see :mod:`eventcore.shredding`).
    """

    __slots__ = ("placeholder",)

    def __init__(self, *, placeholder: Any = _NO_PLACEHOLDER) -> None:
        self.placeholder = placeholder

    def __repr__(self) -> str:
        if self.placeholder is _NO_PLACEHOLDER:
            return "Personal()"
        return f"Personal(placeholder={self.placeholder!r})"


class Subject:
    """Marks the field that names whose personal data an event carries:
    ``customer_id: Annotated[str, Subject]``. Stored in clear text (use an opaque id).
    """


def subject(of: Callable[[Any], object]) -> Callable[[type[T]], type[T]]:
    """Class decorator: the subject of an event is ``str(of(event))`` (instead of a field
    marked :class:`Subject`). Place it below ``@event(...)``, above ``@dataclass``.
    """

    def decorate(cls: type[T]) -> type[T]:
        setattr(cls, _SUBJECT_FN, of)
        return cls

    return decorate


class _Encode(Protocol):
    """The shape of ``ShreddingCodec.encode`` (that of ``Codec.encode``)."""

    def __call__(self, event: Any) -> bytes: ...


class _Envelope(msgspec.Struct, frozen=True):
    """What a payload with personal fields holds: the subject, the personal fields' values
    (a MessagePack map, encrypted as one), and the event itself encoded by the inner codec
    with placeholders in its personal fields."""

    subject: str
    sealed: bytes
    event: msgspec.Raw


_plain_encode = msgspec.msgpack.Encoder(enc_hook=enc_hook).encode
_open_values = msgspec.msgpack.Decoder(dict[str, msgspec.Raw]).decode
_plain_decode = msgspec.msgpack.Decoder().decode
_ENVELOPE_FIELDS = frozenset(_Envelope.__struct_fields__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    decode: Callable[[bytes], Any]  # the field's plaintext (msgpack) back to its type
    placeholder: Any


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How one event class with personal fields is sealed and opened."""

    cls: type
    fields: tuple[_Field, ...]
    subject_of: Callable[[Any], str]
    is_struct: bool
    placeholders: dict[str, Any]


def _default_placeholder(hint: Any) -> Any:
    """The placeholder of a type: its builtin's zero value, or None when it admits None."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _default_placeholder(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        if type(None) in typing.get_args(hint):
            return None
        return _NO_PLACEHOLDER
    for base, zero in ((bool, False), (int, 0), (float, 0.0), (str, ""), (bytes, b"")):
        if isinstance(hint, type) and issubclass(hint, base):
            return zero
    if origin in (list, tuple, set, frozenset, dict) or hint in (list, tuple, set, frozenset, dict):
        return (origin or hint)()
    return _NO_PLACEHOLDER


def _fields_of(cls: type) -> list[tuple[str, Any]]:
    """``(name, annotated type)`` of each field of a dataclass or ``msgspec.Struct``."""
    hints = get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return [(name, hints[name]) for name in cls.__struct_fields__]
    return []


def _markers(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) is typing.Annotated:
        return tuple(hint.__metadata__)
    return ()


def _plan_of(cls: type) -> _Plan | None:
    """The plan of ``cls``, or None when it has no personal field (the inner codec's)."""
    fields: list[_Field] = []
    subject_field: str | None = None
    qual = getattr(cls, "__qualname__", repr(cls))
    for name, hint in _fields_of(cls):
        marks = _markers(hint)
        if any(m is Subject or isinstance(m, Subject) for m in marks):
            subject_field = name
        personal = [m for m in marks if m is Personal or isinstance(m, Personal)]
        if not personal:
            continue
        mark = personal[0]
        placeholder = mark.placeholder if isinstance(mark, Personal) else _NO_PLACEHOLDER
        if placeholder is _NO_PLACEHOLDER:
            placeholder = _default_placeholder(hint)
        if placeholder is _NO_PLACEHOLDER:
            raise TypeError(
                f"personal field {qual}.{name} has a type with no default placeholder: "
                "declare one, Annotated[T, Personal(placeholder=...)]"
            )
        decode = msgspec.msgpack.Decoder(hint, dec_hook=dec_hook).decode
        try:
            decode(_plain_encode(placeholder))
        except (msgspec.MsgspecError, TypeError, ValueError) as exc:
            raise TypeError(
                f"the placeholder {placeholder!r} of personal field {qual}.{name} is not a "
                f"valid value of its type ({exc}): declare one, "
                "Annotated[T, Personal(placeholder=...)]"
            ) from None
        fields.append(_Field(name, decode, placeholder))
    if not fields:
        return None
    of = getattr(cls, _SUBJECT_FN, None)
    subject_of: Callable[[Any], str]
    if of is not None:

        def subject_of(event: Any) -> str:
            return str(of(event))

    elif subject_field is not None:
        attr = subject_field

        def subject_of(event: Any) -> str:
            return str(getattr(event, attr))

    else:
        raise TypeError(
            f"{qual} has personal fields but no subject: mark the field that names the "
            "person Annotated[str, Subject], or decorate the class with @subject(lambda e: ...)"
        )
    return _Plan(
        cls,
        tuple(fields),
        subject_of,
        isinstance(cls, type) and issubclass(cls, msgspec.Struct),
        {f.name: f.placeholder for f in fields},
    )


class ShreddingCodec:
    """A codec that encrypts the personal fields of events with a key per subject.

    Wraps another codec (``MsgpackCodec`` by default, or ``JsonCodec``): classes without
    a field marked :class:`Personal` go through it untouched, their decoders are the
    inner codec's own. Keys come from ``keys`` (a :class:`~eventcore.shredding.KeyStore`);
    ``keys.forget(subject)`` destroys one, and from then on that subject's events decode
    with their personal fields set to placeholders.

    Args:
        keys: where the subjects' keys are kept.
        inner: the codec for everything but the personal fields.
    """

    def __init__(self, keys: KeyStore, inner: Codec | None = None) -> None:
        self.inner: Codec = inner if inner is not None else MsgpackCodec()
        """The wrapped codec."""
        self.keys = keys
        """The key store."""
        self.name = f"shredding+{self.inner.name}"
        """The codec's name: ``shredding+`` and the inner codec's."""
        self._inner_encode = self.inner.encode
        self._plans: dict[type, _Plan | None] = {}
        self._open_envelope = self.inner.decoder(_Envelope)
        self._aeads: dict[str, tuple[bytes, AESGCM]] = {}
        self._checked: set[type] = set()  # classes whose placeholders decode
        self.encode: _Encode = self._encoder()
        """Encode an event, its personal fields sealed (SubjectForgotten if forgotten)."""

    def _aead(self, subject: str, key: bytes | None) -> AESGCM | None:
        """The cipher of ``subject``'s ``key`` (kept: building one costs more than a
        decryption); None, and the kept one dropped, once the subject is forgotten."""
        kept = self._aeads.get(subject)
        if key is None:
            if kept is not None:
                del self._aeads[subject]
            return None
        if kept is not None and kept[0] == key:
            return kept[1]
        if len(self._aeads) >= _AEADS_MAX:
            self._aeads.clear()
        aead = AESGCM(key)
        self._aeads[subject] = (key, aead)
        return aead

    def __repr__(self) -> str:
        return f"ShreddingCodec(inner={self.inner.name!r}, keys={self.keys!r})"

    def _plan(self, cls: type) -> _Plan | None:
        try:
            return self._plans[cls]
        except KeyError:
            plan = self._plans[cls] = _plan_of(cls)
            return plan

    def _encoder(self) -> _Encode:
        """``encode``: a closure, so that an event without personal fields costs one dict
        lookup on top of the inner codec's encode (the executor calls it per event)."""
        plans_get = self._plans.get
        inner_encode = self._inner_encode
        plan_of = self._plan
        seal = self._seal
        unknown = _NO_PLACEHOLDER

        def encode(event: Any) -> bytes:
            """Encode ``event``; its personal fields sealed with its subject's key.

            Raises:
                SubjectForgotten: the event's subject was forgotten (nothing is written).
            """
            plan = plans_get(event.__class__, unknown)
            if plan is None:
                return inner_encode(event)
            if plan is unknown:
                plan = plan_of(event.__class__)
                if plan is None:
                    return inner_encode(event)
            return seal(plan, event)

        return encode

    def _seal(self, plan: _Plan, event: Any) -> bytes:
        subject = plan.subject_of(event)
        if not 0 < len(subject) <= _MAX_SUBJECT:
            raise SerializationError(
                plan.cls.__qualname__,
                f"the subject of an event with personal data must be 1 to {_MAX_SUBJECT} "
                f"characters long, not {len(subject)}",
            )
        if plan.is_struct:
            blank = msgspec.structs.replace(event, **plan.placeholders)
        else:  # a frozen dataclass: a copy, its personal fields overwritten
            blank = copy.copy(event)
            for name, value in plan.placeholders.items():
                object.__setattr__(blank, name, value)
        inner = self._inner_encode(blank)
        if plan.cls not in self._checked:
            self._check_placeholders(plan, inner)
        aead = self._aead(subject, self.keys.key_or_create(subject))
        assert aead is not None
        values = {field.name: getattr(event, field.name) for field in plan.fields}
        nonce = os.urandom(_NONCE)
        sealed = (
            _FORMAT + nonce + aead.encrypt(nonce, _plain_encode(values), _AAD + subject.encode())
        )
        return self._inner_encode(_Envelope(subject, sealed, msgspec.Raw(inner)))

    def _check_placeholders(self, plan: _Plan, blank: bytes) -> None:
        """Once per class: the event with its placeholders must decode (a ``__post_init__``
        may reject them), else a forgotten subject's events could never be read."""
        try:
            self.inner.decoder(plan.cls)(blank)
        except Exception as exc:
            raise SerializationError(
                plan.cls.__qualname__,
                f"the class rejects its personal fields' placeholders ({exc}); declare "
                "placeholders it accepts, Annotated[T, Personal(placeholder=...)]",
            ) from exc
        self._checked.add(plan.cls)

    def _unseal(self, subject: str, blob: bytes, type_name: str) -> dict[str, Any] | None:
        """The sealed personal values (field name to MessagePack), or None when the
        subject is forgotten (the placeholders stored in the event stay)."""
        aead = self._aead(subject, self.keys.key(subject))
        if aead is None:
            return None
        try:
            if blob[:1] != _FORMAT:
                raise InvalidTag
            plain = aead.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], _AAD + subject.encode())
        except InvalidTag:
            raise CiphertextTampered(type_name, subject) from None
        return _open_values(plain)

    def decoder(self, event_class: type) -> Callable[[bytes], Any]:
        """The inner codec's decoder for a class without personal fields; else one that
        opens the sealed fields (placeholders for a forgotten subject).

        ``decoder(dict)`` (what the registry's upcasters start from) gives a payload's
        plain fields, a sealed payload's personal fields opened (or left as placeholders):
        upcasters never see the envelope, and ``converter`` builds the class from them.

        Raises:
            TypeError: a personal field has no subject or no valid placeholder.
        """
        if event_class is dict:
            return self._plain_decoder()
        inner = self.inner.decoder(event_class)
        plan = self._plan(event_class)
        if plan is None:
            return inner
        open_envelope = self._open_envelope
        unseal = self._unseal
        fields = plan.fields
        is_struct = plan.is_struct
        type_name = event_class.__qualname__

        def decode(payload: bytes) -> Any:
            envelope = open_envelope(payload)
            event = inner(envelope.event)
            sealed = unseal(envelope.subject, envelope.sealed, type_name)
            if sealed is None:  # forgotten: the placeholders stored in the event stay
                return event
            values = {f.name: f.decode(sealed[f.name]) for f in fields if f.name in sealed}
            if is_struct:
                return msgspec.structs.replace(event, **values)
            for name, value in values.items():
                object.__setattr__(event, name, value)
            return event

        return decode

    def _plain_decoder(self) -> Callable[[bytes], Any]:
        plain = self.inner.decoder(dict)
        open_envelope = self._open_envelope
        unseal = self._unseal

        def decode(payload: bytes) -> Any:
            data = plain(payload)
            if type(data) is not dict or data.keys() != _ENVELOPE_FIELDS:
                return data  # an event without personal fields
            envelope = open_envelope(payload)
            fields = plain(envelope.event)
            sealed = unseal(envelope.subject, envelope.sealed, "a stored event")
            if sealed is not None:
                fields.update({name: _plain_decode(raw) for name, raw in sealed.items()})
            return fields

        return decode

    def converter(self, event_class: type) -> Callable[[Any], Any]:
        """Build ``event_class`` from plain (upcast, already opened) fields: the inner
        codec's converter, or its encode and decoder."""
        make = getattr(self.inner, "converter", None)
        if make is not None:
            convert: Callable[[Any], Any] = make(event_class)
            return convert
        typed, encode = self.inner.decoder(event_class), self.inner.encode
        return lambda data: typed(encode(data))
