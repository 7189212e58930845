"""The top level holds what an application is written with; moved names warn, then work."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import eventcore
import eventcore.errors
import eventcore.projection
from eventcore.errors import EventCoreError

# Every name that left the top level, and the module it lives in now.
MOVED = {
    "AppendResult": "eventcore.recorded",
    "AsyncMemoryStore": "eventcore.memory",
    "CheckpointStore": "eventcore.projection",
    "Codec": "eventcore.registry",
    "ColumnBatch": "eventcore.projection",
    "CommandReport": "eventcore.observe",
    "DeadLetter": "eventcore.projection",
    "EventStore": "eventcore.store",
    "Expected": "eventcore.store",
    "FailureStrategy": "eventcore.projection",
    "Hook": "eventcore.observe",
    "JsonCodec": "eventcore.registry",
    "MemoryCheckpointStore": "eventcore.projection",
    "MemorySnapshotStore": "eventcore.snapshot",
    "MsgpackCodec": "eventcore.registry",
    "Page": "eventcore.projection",
    "PostgresCheckpointStore": "eventcore.postgres",
    "Progress": "eventcore.projection",
    "Projection": "eventcore.projection",
    "ProjectionRunner": "eventcore.projection",
    "ProjectionStatus": "eventcore.projection",
    "ReconnectPolicy": "eventcore.projection",
    "Snapshot": "eventcore.snapshot",
    "StateCache": "eventcore.state_cache",
    "StateCacheMismatch": "eventcore.state_cache",
    "Subscription": "eventcore.projection",
    "SyncEventStore": "eventcore.store",
    "WrittenEvent": "eventcore.recorded",
    "add_hook": "eventcore.observe",
    "remove_hook": "eventcore.observe",
}


def test_every_public_name_resolves_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in eventcore.__all__:
            assert getattr(eventcore, name) is not None, name


def test_the_top_level_is_small_and_holds_every_error() -> None:
    assert len(eventcore.__all__) <= 45
    errors = {
        name
        for name in eventcore.errors.__all__
        if isinstance(getattr(eventcore.errors, name), type)
        and issubclass(getattr(eventcore.errors, name), EventCoreError)
    }
    assert errors <= set(eventcore.__all__)
    assert not set(MOVED) & set(eventcore.__all__)


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_moved_name_warns_naming_its_new_place_and_is_the_same_object(name: str) -> None:
    new_place = MOVED[name]
    with pytest.warns(DeprecationWarning, match=rf"from {new_place} import {name}\b"):
        old = getattr(eventcore, name)
    assert old is getattr(importlib.import_module(new_place), name)


def test_from_import_of_a_moved_name_warns_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        from eventcore import ProjectionRunner  # noqa: F401
    assert caught[0].filename == __file__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = eventcore.no_such_name  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        from eventcore import no_such_name  # type: ignore[attr-defined]  # noqa: F401


def test_projection_error_is_an_error_kept_where_it_was() -> None:
    assert eventcore.ProjectionError is eventcore.errors.ProjectionError
    assert eventcore.projection.ProjectionError is eventcore.errors.ProjectionError
    assert issubclass(eventcore.ProjectionError, EventCoreError)


def test_star_import_gives_exactly_the_public_names() -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from eventcore import *\n"
        "import eventcore\n"
        "missing = [n for n in eventcore.__all__ if n not in globals()]\n"
        "assert not missing, missing\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
