"""Instructions per in-memory command under callgrind: the stable measure on a busy machine.

    python benches/instructions.py [cold|cached|transfer ...] [--n N] [--misses]
    python benches/instructions.py --cpu [--reps R]

For each workload it runs this file twice under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``: the same preparation (``2N`` streams, as
:class:`eventcore._bench.BankWorkloads` prepares them, and one untimed command per stream
for ``cached``), then ``N`` or ``2N`` commands, each built and executed with
``execute_sync``; the difference of the two totals over ``N`` is one command's
instructions (interpreter start-up and preparation cancel out). Needs valgrind; a run of
the three takes a few minutes.

``--misses`` runs ``valgrind --tool=cachegrind --cache-sim=yes`` instead and adds, per
command the same way, the simulated first-level instruction and data cache misses
(``I1mr``, ``D1mr + D1mw``) and last-level misses (``ILmr + DLmr + DLmw``): what a
command pays beyond its instructions, which callgrind does not see.

``--cpu`` needs no valgrind: the cold command and the cached one on 4,000 streams of 100
events (``memory.command.warm100``'s workload), on 4,000 streams of 10 and on one stream
of 10,000 (``warm10k``'s), 4,000 commands a repetition, alternated in this process and
timed in thread CPU time (``time.thread_time``: not the time the thread waits for a core,
which on a loaded machine is most of a wall-clock figure's noise); each one's median and
its ratio to cold.
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


_EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def _total(kind: str, n: int, m: int, misses: bool = False) -> dict[str, int]:
    """The child's totals: ``{"Ir": ...}``, with every cachegrind event when ``misses``."""
    tool = "cachegrind" if misses else "callgrind"
    extra = ["--cache-sim=yes"] if misses else []
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                f"--tool={tool}",
                *extra,
                f"--{tool}-out-file={tmp}/out",
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
        if misses:
            with open(f"{tmp}/out") as f:
                found = re.search(r"^summary:((?: \d+)+)", f.read(), re.M)
            if found is None:
                raise RuntimeError("no cachegrind summary")
            return dict(zip(_EVENTS, map(int, found.group(1).split()), strict=True))
    total = re.search(r"Collected : (\d+)", out.stderr)
    if total is None:
        raise RuntimeError(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return {"Ir": int(total.group(1))}


def per_command(kind: str, n: int, misses: bool = False) -> dict[str, int]:
    """One ``kind`` command's instructions (and cache misses): see the module docstring."""
    one, two = _total(kind, n, n, misses), _total(kind, n, 2 * n, misses)
    return {k: (two[k] - one[k]) // n for k in one}


def instructions(kind: str, n: int) -> int:
    """One ``kind`` command's instructions (see the module docstring)."""
    return per_command(kind, n)["Ir"]


def cpu_ratios(reps: int, n: int = 4000) -> dict[str, float]:
    """Commands per CPU second of each ``--cpu`` workload (see the module docstring)."""
    import statistics
    import time

    from eventcore import execute_sync
    from eventcore._bench import DC, DEPOSIT, BankWorkloads, filled_store, run_now

    bank = BankWorkloads(DC)

    def cpu_rate(body: Any) -> float:
        gc.collect()
        gc.disable()
        started = time.thread_time()
        units = body()
        seconds = time.thread_time() - started
        gc.enable()
        return float(units) / seconds

    def warm10k() -> float:
        (account,) = bank.ids(1)
        store = filled_store(DC, [account], 10_000)
        execute_sync(store, DC.Deposit(account=account, amount=DEPOSIT))  # cached from here

        def body() -> int:
            for _ in range(n):
                execute_sync(store, DC.Deposit(account=account, amount=DEPOSIT))
            return n

        return cpu_rate(body)

    sides: dict[str, Any] = {
        "cold": lambda: cpu_rate(run_now(bank.prepare_cold(n))),
        "warm100": lambda: cpu_rate(run_now(bank.prepare_warm(n))),
        "warm 4,000 x 10 events": lambda: cpu_rate(run_now(bank.prepare_warm(n, 10))),
        "warm10k": warm10k,
    }
    samples: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(sides[name]())
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        _child(args[1], int(args[2]), int(args[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", help="cold, cached, transfer (default: all)")
    parser.add_argument("--n", type=int, default=1000, help="commands per difference")
    parser.add_argument(
        "--misses", action="store_true", help="also simulated cache misses (cachegrind)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="cold vs cached in thread CPU time (no valgrind)"
    )
    parser.add_argument("--reps", type=int, default=9, help="repetitions per side (--cpu)")
    opts = parser.parse_args(args)
    if opts.cpu:
        rates = cpu_ratios(opts.reps)
        for name, rate in rates.items():
            print(f"{name}: {rate:,.0f} commands per CPU second, {rate / rates['cold']:.3f}x cold")
        return
    unknown = set(opts.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    for kind in opts.kinds or KINDS:
        if not opts.misses:
            print(f"{kind}: {instructions(kind, opts.n):,} instructions per command", flush=True)
            continue
        c = per_command(kind, opts.n, misses=True)
        print(
            f"{kind}: {c['Ir']:,} instructions, first-level misses {c['I1mr']:,} instruction"
            f" + {c['D1mr'] + c['D1mw']:,} data, last-level {c['ILmr'] + c['DLmr'] + c['DLmw']:,}"
            " per command",
            flush=True,
        )


if __name__ == "__main__":
    main()
