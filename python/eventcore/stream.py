"""Stream ids: validated once at the boundary, then plain strings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from eventcore._core import stream_id, validate_stream_id

__all__ = ["ANY", "NO_STREAM", "STREAM_EXISTS", "StreamId", "stream"]

ANY = -1
"""Expected version: append whatever the stream's version is."""
STREAM_EXISTS = -2
"""Expected version: the stream must already hold at least one event."""
NO_STREAM = 0
"""Expected version: the stream must not exist yet (the same as exact version 0)."""

STREAM_FIELD = "eventcore.stream"


if TYPE_CHECKING:
    # For type checkers a StreamId is any str: a command's stream fields take plain strings
    # (``Transfer(source="acc-1", ...)``) and convert them when the command is built.
    StreamId: TypeAlias = str
else:

    class StreamId(str):
        """A validated stream id: a ``str`` that is known to follow the rules.

        Rules (checked in Rust, once, when the value is built): surrounding whitespace is
        trimmed; the result must be non-empty, at most 255 characters (code points), and free
        of control characters (Unicode category Cc). Breaking a rule raises
        :class:`~eventcore.InvalidStreamId`, which is also a ``ValueError``.

        >>> StreamId("  account-42 ")
        'account-42'
        """

        __slots__ = ()

        def __new__(cls, value: str) -> StreamId:
            """Validate ``value`` (see the class docstring) and return it as a StreamId."""
            if cls is StreamId:
                return stream_id(value)
            if type(value) is cls:
                return value
            return str.__new__(cls, validate_stream_id(value))

        def __repr__(self) -> str:
            return f"StreamId({str.__repr__(self)})"


def stream() -> Any:
    """Mark a command field as a stream the command reads and may write.

    The field holds a :class:`StreamId` (a plain ``str`` is validated and converted) or a
    tuple of them, e.g. ``account: StreamId = stream()``.
    """
    import dataclasses  # here, not at the top: a bare `import eventcore` stays light

    return dataclasses.field(metadata={STREAM_FIELD: True}, kw_only=True)
