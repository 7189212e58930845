"""Crypto-shredding: personal fields encrypted per subject, forgotten by destroying a key.

Mark personal fields with ``Annotated[T, Personal]`` and the field naming the person
with ``Annotated[str, Subject]`` (or decorate the class with :func:`subject`), and give
the registry a :class:`ShreddingCodec`::

    keys = MemoryKeyStore()  # or eventcore.shredding.postgres.PostgresKeyStore(dsn)
    registry = EventRegistry(ShreddingCodec(keys))

Each personal field is encrypted with AES-256-GCM under its subject's key (a fresh
nonce per field, authenticated together with the field's name and the subject).
``keys.forget(subject)`` destroys the key; from then on the subject's events decode
with each personal field set to its placeholder, and new events for the subject are
refused (:class:`~eventcore.errors.SubjectForgotten`). The placeholder is the one given
as ``Personal(placeholder=...)``, else by the field's type:

=====================================  ==============================
field type                             placeholder
=====================================  ==============================
``str`` (and subclasses)               ``""``
``int`` (and subclasses)               ``0``
``float``                              ``0.0``
``bool``                               ``False``
``bytes``                              ``b""``
``list``/``tuple``/``set``/``dict``    an empty one
anything ``| None``                    ``None``
any other type                         none: declare one (a TypeError
                                       when the class is registered)
=====================================  ==============================

A placeholder must decode as a value of its field's type (checked at registration).
Classes without personal fields are the inner codec's business alone.
"""

from __future__ import annotations

from eventcore.shredding._codec import Personal, ShreddingCodec, Subject, subject
from eventcore.shredding._errors import CiphertextTampered, SubjectForgotten, SubjectKeyMissing
from eventcore.shredding._keys import KeyStore, MemoryKeyStore

__all__ = [
    "CiphertextTampered",
    "KeyStore",
    "MemoryKeyStore",
    "Personal",
    "ShreddingCodec",
    "Subject",
    "SubjectForgotten",
    "SubjectKeyMissing",
    "subject",
]
