"""The guide docs/guides/deleting-data.md: its Python blocks run, in order, as one program."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "deleting-data.md"


def test_the_deleting_data_guide_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    program = tmp_path / "deleting_data.py"
    program.write_text("\n".join(blocks) + "\nprint('guide ran')\n")
    proc = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("guide ran")
