"""docs/guides/evolving-events.md: its Python blocks run, in order, as one program."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "evolving-events.md"


def test_the_guide_examples_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 8
    program = tmp_path / "guide.py"
    program.write_text("\n".join(blocks) + '\nprint("guide ok")\n')
    proc = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("guide ok")
