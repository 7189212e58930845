"""The Rust boundary sits where the sources say: the in-memory store is pure Rust."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "rust" / "src"

# store.rs ("pure Rust, no Python types") and the child modules it declares with #[path].
STORE = ("store.rs", "columns.rs", "dcb.rs")


def _children(name: str) -> set[str]:
    return set(re.findall(r'#\[path = "([^"]+)"\]', (SRC / name).read_text()))


def test_the_store_declares_the_modules_checked_here() -> None:
    assert {"columns.rs", "dcb.rs"} == _children("store.rs")


@pytest.mark.parametrize("name", STORE)
def test_the_store_modules_use_no_python_types(name: str) -> None:
    text = (SRC / name).read_text()
    assert "pyo3" not in text
    assert not re.search(r"\bPy(Result|Any|Err|Object)\b|\bPython<", text)
