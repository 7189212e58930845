"""The command protocol is generic: a type checker flags apply/handle with the wrong types."""

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
