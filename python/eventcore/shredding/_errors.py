"""The errors of crypto-shredding (all :class:`~eventcore.errors.EventCoreError`)."""

from __future__ import annotations

from eventcore.errors import EventCoreError, SerializationError, StoreError

__all__ = ["CiphertextTampered", "SubjectForgotten", "SubjectKeyMissing"]


class SubjectForgotten(EventCoreError):
    """An event with personal data names a subject whose key was destroyed (forgotten).

    Raised when such an event is encoded: the command fails and writes nothing. A
    forgotten subject stays forgotten; new data about the person needs a new subject id.
    Never retried.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"personal-data subject {subject!r} was forgotten: its key is destroyed and no "
            "new event may carry personal data for it (use a new subject id)"
        )


class CiphertextTampered(SerializationError):
    """An event's encrypted personal fields did not authenticate; never retried.

    Their bytes were altered, moved to another subject, or sealed with another key.
    Decoders raise it; reads and folds raise ``SerializationError`` with it as the
    ``__cause__``.

    Attributes:
        subject: the subject the event names.
    """

    def __init__(self, event_type: str, subject: str) -> None:
        self.subject = subject
        super().__init__(
            event_type,
            f"the personal fields of subject {subject!r} fail authentication (tampered "
            "ciphertext or wrong key); the event is not decoded",
        )


class SubjectKeyMissing(StoreError):
    """A stored event names a subject the key store has no row for; never retried.

    Neither a key nor a forgotten mark: the key table is incomplete (restored from
    another backup?). Never taken for a forgotten subject. Decoders raise it; reads and
    folds raise ``SerializationError`` with it as the ``__cause__``.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"no key and no forgotten mark stored for personal-data subject {subject!r}; "
            "its events cannot be read (is the key table from the same database?)"
        )
