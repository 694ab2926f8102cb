"""Warnings for import paths kept for one release after their code moved."""

from __future__ import annotations

import warnings


def moved(old: str, new: str) -> None:
    """Warn that `old` is deprecated in favour of `new`, naming the user's line that imported it.

    Called from a module's top level or its `__getattr__`: stack level 3 is the importing
    code, since `warnings` skips importlib's own frames when it counts.
    """
    warnings.warn(f"{old} is deprecated and goes away in the next release: {new}",
                  DeprecationWarning, stacklevel=3)
