"""Key stores: where each subject's key lives, and where forgetting destroys it."""

from __future__ import annotations

import os
import threading
from typing import Protocol, runtime_checkable

from eventcore.shredding._errors import SubjectForgotten, SubjectKeyMissing

__all__ = ["KeyStore", "MemoryKeyStore", "new_key"]

KEY_BYTES = 32
"""AES-256: the length of every subject's key."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


@runtime_checkable
class KeyStore(Protocol):
    """The keys of personal-data subjects, as the codec uses them (synchronously).

    A subject has one of three states: no row (never seen), a key, or forgotten (the
    key destroyed, a mark kept). A forgotten subject never gets a key again, so a
    missing key is never taken for a forgotten one.
    """

    def key(self, subject: str) -> bytes | None:
        """The subject's key; None once forgotten.

        Raises:
            SubjectKeyMissing: the store has no row for ``subject``.
        """
        ...

    def key_or_create(self, subject: str) -> bytes:
        """The subject's key, created (and stored) if it has none yet.

        Raises:
            SubjectForgotten: the subject was forgotten.
        """
        ...

    def forget(self, subject: str) -> bool:
        """Destroy the subject's key and keep a forgotten mark; True if a key was destroyed.

        Forgetting an unknown subject marks it forgotten too (its future events refuse).
        """
        ...


class MemoryKeyStore:
    """Keys in this process's memory: for tests and the in-memory store (lost on exit)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes | None] = {}  # None: forgotten
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the keys
        return f"MemoryKeyStore(<{len(self._keys)} subjects>)"

    def key(self, subject: str) -> bytes | None:
        """The subject's key; None once forgotten (SubjectKeyMissing if unknown)."""
        try:
            return self._keys[subject]
        except KeyError:
            raise SubjectKeyMissing(subject) from None

    def key_or_create(self, subject: str) -> bytes:
        """The subject's key, created if it has none (SubjectForgotten if forgotten)."""
        key = self._keys.get(subject)
        if key is None:
            with self._lock:
                key = self._keys.setdefault(subject, new_key())
            if key is None:
                raise SubjectForgotten(subject)
        return key

    def forget(self, subject: str) -> bool:
        """Destroy the subject's key, keep a forgotten mark; True if a key was destroyed."""
        with self._lock:
            had = self._keys.get(subject) is not None
            self._keys[subject] = None
        return had
