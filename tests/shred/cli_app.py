"""An app for the CLI tests: an in-memory store whose registry shreds (``--app``)."""

from __future__ import annotations

from eventcore import MemoryStore
from eventcore.shredding import MemoryKeyStore
from tests.shred.domain import make_registry


class App:
    """What ``eventcore --app tests.shred.cli_app:app`` loads: its ``store``."""

    def __init__(self) -> None:
        self.keys = MemoryKeyStore()
        self.store = MemoryStore(registry=make_registry(self.keys))


app = App()
