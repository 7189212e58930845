"""Example domains shipped with eventcore (used by ``eventcore demo`` and ``eventcore bench``)."""
