"""Columnar batches: the envelopes of many events as numpy arrays, for vectorized folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventcore.recorded import RecordedEvent

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from eventcore.registry import EventRegistry

__all__ = ["ColumnBatch", "require_numpy"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def require_numpy() -> Any:
    """Import numpy, or raise ImportError saying that columnar batches need it."""
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy is installed in the test venv
        raise ImportError(
            "columnar projection batches (apply_columns) need numpy: pip install numpy"
        ) from exc
    return numpy


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """A run of events as parallel numpy arrays, one item per event in position order.

    Codes are stable for the life of one subscription (with the in-memory store, for the
    life of the store): ``type_names[type_codes[i]]`` is the i-th event's type and
    ``stream_names[stream_codes[i]]`` its stream; the name lists only grow. Count by type
    with ``numpy.bincount(batch.type_codes, minlength=len(batch.type_names))``.

    Attributes:
        positions: global positions (``int64``).
        type_codes: event-type codes (``int32``).
        stream_codes: stream codes (``int32``).
        recorded_at: microseconds since the unix epoch, UTC (``int64``).
        type_names: code to event-type name (covers every code in the batch).
        stream_names: code to stream id (covers every code in the batch).
    """

    positions: npt.NDArray[np.int64]
    type_codes: npt.NDArray[np.int32]
    stream_codes: npt.NDArray[np.int32]
    recorded_at: npt.NDArray[np.int64]
    type_names: Sequence[str]
    stream_names: Sequence[str]

    def __len__(self) -> int:
        return len(self.positions)

    def type_code(self, event_type: str) -> int | None:
        """The code of ``event_type`` (None if no event of that type was seen)."""
        try:
            return list(self.type_names).index(event_type)
        except ValueError:
            return None


class ColumnBuilder:
    """Builds :class:`ColumnBatch` objects with codes stable across batches.

    Type names are the registered (logical) names: with ``registry``, the store's codes of
    stored type keys (one per version and alias) are mapped to one code per name.
    """

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.np = require_numpy()
        self.type_names: list[str] = []
        self.stream_names: list[str] = []
        self._types: dict[str, int] = {}
        self._streams: dict[str, int] = {}
        self._registry = registry
        self._store_types = 0  # the store's type codes seen so far
        self._remap: Any = None  # store code -> code here, when they differ

    def from_buffers(
        self,
        raw: tuple[bytes, bytes, bytes, bytes, list[str], list[str]],
        keep: Any = None,
    ) -> ColumnBatch:
        """A batch from ``MemoryStore.read_columns`` output (codes are the store's).

        ``keep`` is an optional boolean mask of the events to keep (filters).
        """
        np = self.np
        positions, types, streams, recorded, new_types, new_streams = raw
        if new_types:
            self._add_store_types(new_types)
        self.stream_names.extend(new_streams)
        type_codes = np.frombuffer(types, dtype="<i4")
        if self._remap is not None and len(type_codes):
            type_codes = self._remap[type_codes]
        cols = (
            np.frombuffer(positions, dtype="<i8"),
            type_codes,
            np.frombuffer(streams, dtype="<i4"),
            np.frombuffer(recorded, dtype="<i8"),
        )
        if keep is not None:
            cols = tuple(c[keep] for c in cols)
        return ColumnBatch(*cols, self.type_names, self.stream_names)

    @property
    def store_types(self) -> int:
        """How many of the store's type codes this builder knows (``read_columns`` sends
        the names of the codes past it)."""
        return self._store_types

    def _add_store_types(self, new_types: Sequence[str]) -> None:
        """Code the store's new type keys by their registered name; a remap array from
        the store's codes is kept only once two keys share a name (else codes agree)."""
        registry = self._registry
        codes = []
        for key in new_types:
            name = registry.resolve(key)[0] if registry is not None else key
            code = self._types.get(name)
            if code is None:
                code = self._types[name] = len(self.type_names)
                self.type_names.append(name)
            codes.append(code)
        first = self._store_types
        self._store_types += len(codes)
        if self._remap is None and codes == list(range(first, self._store_types)):
            return
        start = (
            self._remap if self._remap is not None else self.np.arange(first, dtype=self.np.int32)
        )
        self._remap = self.np.concatenate([start, self.np.array(codes, dtype=self.np.int32)])

    def from_events(self, events: Sequence[RecordedEvent[Any]]) -> ColumnBatch:
        """A batch from recorded events (any store); codes are interned here."""
        np = self.np
        types, streams = self._types, self._streams
        type_codes = []
        stream_codes = []
        for e in events:
            t = types.get(e.event_type)
            if t is None:
                t = types[e.event_type] = len(self.type_names)
                self.type_names.append(e.event_type)
            s = streams.get(e.stream_id)
            if s is None:
                s = streams[e.stream_id] = len(self.stream_names)
                self.stream_names.append(e.stream_id)
            type_codes.append(t)
            stream_codes.append(s)
        micros = [_micros(e) for e in events]
        return ColumnBatch(
            np.fromiter((e.position for e in events), dtype=np.int64, count=len(events)),
            np.array(type_codes, dtype=np.int32),
            np.array(stream_codes, dtype=np.int32),
            np.array(micros, dtype=np.int64),
            self.type_names,
            self.stream_names,
        )

    def mask(self, raw_types: Any, raw_streams: Any, event_types: Any, stream_prefix: Any) -> Any:
        """A boolean mask of events matching the filters (None: keep all)."""
        np = self.np
        keep = None
        if event_types is not None:
            wanted = [i for i, name in enumerate(self.type_names) if name in set(event_types)]
            keep = np.isin(raw_types, np.array(wanted, dtype=np.int32))
        if stream_prefix is not None:
            match = np.fromiter(
                (name.startswith(stream_prefix) for name in self.stream_names),
                dtype=bool,
                count=len(self.stream_names),
            )
            by_stream = match[raw_streams] if len(match) else np.zeros(len(raw_streams), bool)
            keep = by_stream if keep is None else keep & by_stream
        return keep


def _micros(event: RecordedEvent[Any]) -> int:
    ts = getattr(event, "_ts", None)
    if isinstance(ts, int):
        return ts
    delta = event.recorded_at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
