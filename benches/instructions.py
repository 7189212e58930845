"""Instructions per in-memory command under callgrind: the stable measure on a busy machine.

    python benches/instructions.py [cold|cached|transfer ...] [--n N]

For each workload it runs this file twice under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``: the same preparation (``2N`` streams, as
:class:`eventcore._bench.BankWorkloads` prepares them, and one untimed command per stream
for ``cached``), then ``N`` or ``2N`` commands, each built and executed with
``execute_sync``; the difference of the two totals over ``N`` is one command's
instructions (interpreter start-up and preparation cancel out). Needs valgrind; a run of
the three takes a few minutes.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

KINDS = ("cold", "cached", "transfer")


def _prepare(kind: str, n: int) -> list[tuple[Any, str, str]]:
    """``2n`` commands' worth of streams on a fresh store: ``(store, stream, other)``."""
    from eventcore import execute_sync
    from eventcore._bench import DC, DEPOSIT, BankWorkloads, fill, run_now

    bank = BankWorkloads(DC)
    store, ids = bank.new_store(), bank.ids(2 * n)
    if kind == "cold":
        return [(store, s, "") for s in ids]
    if kind == "cached":
        run_now(fill(store, DC, ids, 100))
        for s in ids:  # the state is cached from here on
            execute_sync(store, DC.Deposit(account=s, amount=DEPOSIT))
        return [(store, s, "") for s in ids]
    ids += bank.ids(2 * n)
    run_now(fill(store, DC, ids, 2))
    return [(store, a, b) for a, b in zip(ids[0::2], ids[1::2], strict=True)]


def _run(kind: str, todo: list[tuple[Any, str, str]]) -> None:
    from eventcore import execute_sync
    from eventcore._bench import DC, DEPOSIT, OPENED_OWNER

    if kind == "cold":
        for store, s, _ in todo:
            execute_sync(store, DC.OpenAccount(account=s, owner=OPENED_OWNER))
    elif kind == "cached":
        for store, s, _ in todo:
            execute_sync(store, DC.Deposit(account=s, amount=DEPOSIT))
    else:
        half = DEPOSIT // 2
        for store, a, b in todo:
            execute_sync(store, DC.Transfer(source=a, target=b, amount=half))


def _child(kind: str, n: int, m: int) -> None:
    """Under callgrind: warm the interpreter up, prepare ``2n``, run ``m`` commands."""
    _run(kind, _prepare(kind, 50)[:100])
    todo = _prepare(kind, n)[:m]
    gc.disable()
    _run(kind, todo)


def _total(kind: str, n: int, m: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--child",
                kind,
                str(n),
                str(m),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def instructions(kind: str, n: int) -> int:
    """One ``kind`` command's instructions (see the module docstring)."""
    return (_total(kind, n, 2 * n) - _total(kind, n, n)) // n


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        _child(args[1], int(args[2]), int(args[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help="cold, cached, transfer (default: all)")
    parser.add_argument("--n", type=int, default=1000, help="commands per difference")
    opts = parser.parse_args(args)
    unknown = set(opts.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    for kind in opts.kinds or KINDS:
        print(f"{kind}: {instructions(kind, opts.n):,} instructions per command", flush=True)


if __name__ == "__main__":
    main()
