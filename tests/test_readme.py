"""The README's Python examples run, in order, as one program; its test examples pass."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

RUN_TESTS = """
from eventcore import MemoryStore
assert [(w.stream_id, w.version) for w in result.events] == [("acc-1", 2), ("acc-2", 1)]
tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}
assert len(tests) >= 3, tests
for name, test in tests.items():
    if test.__code__.co_argcount:
        test(Scenario(MemoryStore()))
    else:
        test()
    print("passed", name)
"""


def test_readme_examples_run_and_their_tests_pass(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 6
    program = tmp_path / "readme_examples.py"
    program.write_text("\n".join(blocks) + RUN_TESTS)
    # A fresh interpreter: the README registers event names of its own.
    proc = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("passed test_") >= 3, proc.stdout
