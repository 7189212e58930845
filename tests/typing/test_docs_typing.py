"""The README's code and the examples pass basedpyright (strict) and mypy --strict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "bank.py", ROOT / "python" / "eventcore" / "examples" / "bank.py"]

PYRIGHT_CONFIG = {
    "typeCheckingMode": "strict",
    "pythonVersion": "3.11",
    "reportMissingModuleSource": False,
    # Each README block repeats the imports it uses so that it reads on its own; run as
    # one program (tests/test_readme.py), the repeats are no mistake.
    "reportDuplicateImport": False,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The README's python blocks as one program (as test_readme runs them), the examples."""
    work = tmp_path_factory.mktemp("docs_typing")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 6
    readme = work / "readme_app.py"
    readme.write_text("\n".join(blocks))
    (work / "pyrightconfig.json").write_text(json.dumps(PYRIGHT_CONFIG))
    return [readme, *EXAMPLES]


def test_basedpyright_strict_finds_nothing(sources: list[Path]) -> None:
    exe = shutil.which("basedpyright", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("basedpyright is not installed (it is in the [test] extra)")
    proc = subprocess.run(
        [
            exe,
            "--outputjson",
            "--project",
            str(sources[0].parent),
            "--pythonpath",
            sys.executable,
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    found = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['severity']}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] in ("error", "warning")
    ]
    assert report["summary"]["filesAnalyzed"] == len(sources)
    assert found == [], "\n".join(found)


def test_mypy_strict_finds_nothing(sources: list[Path]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(sources[0].parent / "mypy-cache"),
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=sources[0].parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"no issues found in {len(sources)} source files" in proc.stdout
