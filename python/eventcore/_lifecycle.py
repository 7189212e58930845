"""Argument checks shared by every store's stream lifecycle (``store.StreamLifecycle``)."""

from __future__ import annotations

from eventcore.errors import ValidationError


def check_expected(expected: object) -> int:
    """``expected`` if it is a version a delete or truncation may check, else ValidationError."""
    if type(expected) is not int or expected < -2:
        raise ValidationError(
            "expected", "must be an exact version >= 0, NO_STREAM, STREAM_EXISTS or ANY", expected
        )
    return expected


def check_before(before_version: object) -> int:
    """``before_version`` if it is an int >= 1 (the store checks the upper bound)."""
    if type(before_version) is not int or before_version < 1:
        raise ValidationError("before_version", "must be an int >= 1", before_version)
    return before_version


def out_of_range(stream_id: str, before_version: int, version: int) -> ValidationError:
    """The error for a ``before_version`` past the stream's version + 1."""
    return ValidationError(
        "before_version",
        f"must be between 1 and the version of stream {stream_id!r} + 1 ({version + 1})",
        before_version,
    )


def check_purge(actor: object, reason: object) -> None:
    """ValidationError unless ``actor`` is a non-empty str and ``reason`` a str."""
    if not isinstance(actor, str) or not actor.strip():
        raise ValidationError("actor", "must say who purges: a non-empty str", actor)
    if not isinstance(reason, str):
        raise ValidationError("reason", "must be a str", reason)
