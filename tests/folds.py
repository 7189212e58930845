"""Folds in tests: what a store's fold reads return, folded as the command machine
folds them (``_core.fold``, the machine's fold loop). A store only reads; a fold test says
"the rows read fold to X"."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventcore import _core


async def fold_streams(
    store: Any,
    streams: Sequence[str],
    state: Any,
    apply: Callable[[Any, Any, str], Any],
    decoders: Mapping[str, Callable[[bytes], Any]],
) -> tuple[Any, list[int]]:
    """``store.read_fold(streams)``, its rows folded into ``state``; and the versions."""
    rows, versions = await store.read_fold(streams)
    return _core.fold(state, apply, decoders, rows), versions


async def fold_tail(
    store: Any,
    streams: Sequence[str],
    versions: Sequence[int],
    fold_from: int,
    state: Any,
    apply: Callable[[Any, Any, str], Any],
    decoders: Mapping[str, Callable[[bytes], Any]],
    hint: object = None,
) -> tuple[Any, list[int]] | None:
    """``store.read_tail(...)``, its rows folded into ``state`` (None when it refused)."""
    read = await store.read_tail(streams, versions, fold_from, hint)
    if read is None:
        return None
    rows, now = read
    return _core.fold(state, apply, decoders, rows), now


def fold_streams_sync(
    store: Any,
    streams: Sequence[str],
    state: Any,
    apply: Callable[[Any, Any, str], Any],
    decoders: Mapping[str, Callable[[bytes], Any]],
) -> tuple[Any, list[int]]:
    """:func:`fold_streams` on a synchronous store."""
    rows, versions = store.read_fold(streams)
    return _core.fold(state, apply, decoders, rows), versions


def fold_tail_sync(
    store: Any,
    streams: Sequence[str],
    versions: Sequence[int],
    fold_from: int,
    state: Any,
    apply: Callable[[Any, Any, str], Any],
    decoders: Mapping[str, Callable[[bytes], Any]],
    hint: object = None,
) -> tuple[Any, list[int]] | None:
    """:func:`fold_tail` on a synchronous store."""
    read = store.read_tail(streams, versions, fold_from, hint)
    if read is None:
        return None
    rows, now = read
    return _core.fold(state, apply, decoders, rows), now
