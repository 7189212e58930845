"""UUIDv7 after os.fork: the child must not repeat the parent's ids or random bits."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

import pytest

import eventcore
from eventcore import _core

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

COUNT = 200
RANDOM_BITS = (1 << 62) - 1  # rand_b: the low 62 bits


def ids_in_child() -> tuple[list[int], list[int]]:
    """Fork; both processes generate COUNT ids; the child sends its ids through a pipe."""
    eventcore.uuid7()  # the generator is seeded and has state before the fork
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            time.sleep(0.002)  # start in a new millisecond: a fresh random counter
            ids = [eventcore.uuid7().int for _ in range(COUNT // 2)]
            ids += _core.uuid7_ints(COUNT - COUNT // 2)
            data = json.dumps(ids).encode()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write_fd)
    time.sleep(0.002)
    parent = [eventcore.uuid7().int for _ in range(COUNT // 2)]
    parent += _core.uuid7_ints(COUNT - COUNT // 2)
    with os.fdopen(read_fd, "rb") as pipe:
        child = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return parent, child


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_uuid7_differs_between_parent_and_child() -> None:
    parent, child = ids_in_child()
    assert len(child) == COUNT
    # Valid and increasing in the child too.
    assert all((v >> 76) & 0xF == 7 for v in child)
    assert all(a < b for a, b in itertools.pairwise(child))
    # No id is shared, and the random parts differ (a copied generator state would repeat
    # the parent's random bits exactly).
    assert not set(parent) & set(child)
    assert not {v & RANDOM_BITS for v in parent} & {v & RANDOM_BITS for v in child}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_fork_gets_fresh_ids() -> None:
    _, first = ids_in_child()
    _, second = ids_in_child()
    assert not set(first) & set(second)
    assert not {v & RANDOM_BITS for v in first} & {v & RANDOM_BITS for v in second}
