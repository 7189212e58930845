"""Property: whatever the values and whichever subjects are forgotten, a read returns the
event as written for a subject with a key, and its placeholders for a forgotten one."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from eventcore.registry import JsonCodec, MsgpackCodec
from eventcore.shredding import MemoryKeyStore
from tests.shred.domain import Moved, Registered, make_registry

subjects = st.sampled_from(["a", "b", "c", "d"])
registered = st.builds(
    Registered,
    customer=subjects,
    name=st.text(),
    email=st.text(),
    age=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    plan=st.text(),
)
moved = st.builds(
    Moved, who=subjects, address=st.none() | st.text(), tags=st.lists(st.text(), max_size=3)
)


def blank(event: object) -> object:
    if isinstance(event, Registered):
        return dataclasses.replace(event, name="", email="forgotten@invalid", age=0)
    assert isinstance(event, Moved)
    return Moved(event.who, None, [])


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(registered | moved, max_size=12),
    forgotten=st.sets(subjects),
    json=st.booleans(),
)
def test_reads_are_the_events_or_their_placeholders(
    events: list[object], forgotten: set[str], json: bool
) -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys, JsonCodec() if json else MsgpackCodec())
    stored = [registry.encode(e) for e in events]
    for s in forgotten:
        keys.forget(s)
    for event, (name, payload) in zip(events, stored, strict=True):
        who = event.customer if isinstance(event, Registered) else event.who  # type: ignore[attr-defined]
        expected = blank(event) if who in forgotten else event
        assert registry.decode(name, payload) == expected
