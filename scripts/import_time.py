"""How long an application's import of eventcore takes, above the bare interpreter.

    python scripts/import_time.py [--runs 15] [--no-bytecode] [--base DIR]

Each line runs in a fresh interpreter, which times only that line (``time.perf_counter``
and ``time.process_time`` around it), so the interpreter's own start-up is left out; the
best of ``--runs`` is reported, as CPU and wall milliseconds (on a loaded machine the CPU
figure is the steadier one). The bytecode cache is used (written to a temporary
``PYTHONPYCACHEPREFIX``, as an installed wheel has its ``.pyc`` files) unless
``--no-bytecode``, where every module is compiled from source on every start.
``--base DIR`` also times the package found in ``DIR`` (a directory holding another
checkout's ``eventcore`` package, e.g. from ``git archive``, with a built ``_core``), the
two alternated run by run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

LINES = {
    "import eventcore": "import eventcore",
    "application import": "from eventcore import Command, MemoryStore, event, execute_sync, stream",
}
PROBE = (
    "import time\n"
    "w, c = time.perf_counter(), time.process_time()\n"
    "{}\n"
    "print(time.perf_counter() - w, time.process_time() - c)"
)


def _time(code: str, env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    return float(out[-1]), float(out[-2])


def main() -> None:
    """Time the lines and print the best of the runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-bytecode", action="store_true")
    parser.add_argument("--base", help="a directory holding another eventcore package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ)
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        trees = {"this": env}
        if args.base:
            trees["base"] = {**env, "PYTHONPATH": os.path.abspath(args.base)}
        best = {(t, k): (float("inf"), float("inf")) for t in trees for k in LINES}
        for _ in range(args.runs):
            for key, code in LINES.items():
                for tree, tree_env in trees.items():
                    cpu, wall = _time(code, tree_env)
                    old = best[tree, key]
                    best[tree, key] = (min(old[0], cpu), min(old[1], wall))
    cache_text = "without a bytecode cache" if args.no_bytecode else "with a bytecode cache"
    print(f"best of {args.runs}, {cache_text}: CPU ms (wall ms) above the bare interpreter")
    for key in LINES:
        cells = [f"{t} {best[t, key][0] * 1e3:6.1f} ({best[t, key][1] * 1e3:6.1f})" for t in trees]
        print(f"  {key:20s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
