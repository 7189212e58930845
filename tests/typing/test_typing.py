"""Type checkers flag wrong uses of commands, stream fields and value types, and only those.

usage.py marks each line a checker must flag with ``# error``; pyright and mypy must flag
exactly those lines (stream fields take a plain ``str``; a ``Money`` is not a ``Quantity``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USAGE = Path(__file__).with_name("usage.py")


def _pyright() -> list[str]:
    exe = shutil.which("basedpyright", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("basedpyright is not installed (it is in the [test] extra)")
    return [exe]


def test_pyright_flags_exactly_the_marked_lines() -> None:
    proc = subprocess.run(
        [
            *_pyright(),
            "--outputjson",
            "--project",
            str(USAGE.parent),
            "--pythonpath",
            sys.executable,
            str(USAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    flagged = {
        d["range"]["start"]["line"] + 1
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    }
    lines = USAGE.read_text().splitlines()
    expected = {i for i, line in enumerate(lines, start=1) if line.rstrip().endswith("# error")}
    assert expected, "the usage file marks no wrong usage"
    assert flagged == expected, (
        f"pyright flagged lines {sorted(flagged)}, expected {sorted(expected)}:\n"
        + "\n".join(
            f"{d['range']['start']['line'] + 1}: {d['message']}"
            for d in report["generalDiagnostics"]
        )
    )


def test_mypy_flags_exactly_the_marked_lines(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(USAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    flagged = {int(line.split(":")[1]) for line in proc.stdout.splitlines() if ": error:" in line}
    lines = USAGE.read_text().splitlines()
    expected = {i for i, line in enumerate(lines, start=1) if line.rstrip().endswith("# error")}
    assert flagged == expected, proc.stdout
