"""Commands whose consistency boundary is a query of event types and tags (DCB).

A :class:`QueryCommand` declares its boundary with :meth:`~QueryCommand.query` instead of
(or beside) streams. :func:`~eventcore.execute` and :func:`~eventcore.execute_sync` run it
the way they run any command: read the events the query matches (and the declared
streams, if any), fold them in global order through ``apply``, call ``handle``, and append
the new events with an :class:`~eventcore.query.AppendCondition` (no event matching the
query after the position read) and the streams' versions as expected versions. When the
condition fails (:class:`~eventcore.ConditionFailed`) or a version conflicts, the command
runs again from fresh state, per the :class:`~eventcore.RetryPolicy`.

New events carry tags: ``handle`` returns ``(stream_id, event)`` pairs as usual, and
:meth:`~QueryCommand.tags_of` tags each event. A query command may append to any stream:
the query is what keeps decisions consistent.

The state cache: a command that declares no stream keeps its folded state in the store's
:class:`~eventcore.state_cache.StateCache` with the position it is consistent with (keyed
by the class, the query and the fields the state depends on); the next command reads only
the matching events after that position. After an append the state gets the command's own
events that match the query, and the append's last position: no matching event can lie
below it unseen (the condition held, under the store's locks). A command that declares
streams too folds in full each time (a stream's events need not match the query, so one
position does not describe its state).

A query command runs in the one command machine (:mod:`eventcore._pipeline`,
``rust/src/pipeline_query.rs``) like any command: the same retry policy (a failed
condition is retried like a version conflict), idempotency keys, observe hooks and trace
reports, typed errors and :class:`~eventcore.testing.Scenario`. On the in-memory store the
whole command runs in one native call (the read and fold, ``handle``, the conditional
append); any other store gets the effects ``QUERY``, ``STREAMS`` and ``APPEND_IF``.
A retry after a failed condition folds on from the state it decided on when the command is
cached (only what came after the position it read).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from eventcore.command import Command
from eventcore.query import Query

__all__ = ["QueryCommand"]

S = TypeVar("S")
E = TypeVar("E")

_READ, _STREAMS, _APPEND, _SLEEP = "read", "streams", "append", "sleep"


class QueryCommand(Command[S, E]):
    """A command whose consistency boundary is :meth:`query` (see :mod:`eventcore.boundary`).

    ::

        class Subscribe(QueryCommand[Counts, object]):
            student: str
            course: str

            def query(self) -> Query:
                return Query.of(["Subscribed"], [f"course:{self.course}"]) | Query.of(
                    ["Subscribed"], [f"student:{self.student}"]
                )
            ...

    Stream fields (:func:`~eventcore.stream`) are optional: declared streams are read,
    folded with the query's events in global order, and checked by version on append.
    """

    _query_boundary: ClassVar[bool] = True

    @abstractmethod
    def query(self) -> Query:
        """The events this decision depends on: none of them may appear unseen."""

    def tags_of(self, event: E) -> Iterable[str]:
        """The tags of a new event ``handle`` returned (validated like stream ids)."""
        return ()


_key_fields: dict[type, tuple[str, ...]] = {}
"""Per query command class: the fields its state depends on (found once per class)."""


def _cache_key(command: QueryCommand[Any, Any], query: Query) -> Any:
    """The state cache key of a query command (the machine calls it), or ``None``."""
    cls = type(command)
    names = _key_fields.get(cls)
    if names is None:
        from eventcore.state_cache import state_key_fields

        found = state_key_fields(cls)
        if found is None:
            found = tuple(f.name for f in dataclasses.fields(command))
        names = _key_fields[cls] = found
    try:
        key = (cls, "query", query, tuple(getattr(command, n) for n in names))
        hash(key)
    except TypeError:  # an unhashable field: no caching for this command
        return None
    return key
