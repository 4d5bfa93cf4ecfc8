"""Argument checks shared by the options objects: a ValueError that names the argument."""

from __future__ import annotations


def check_int(name: str, v, minimum: int = 1, note: str = "") -> None:
    """ValueError naming `name` unless v is an int (not a bool) >= minimum; `note` follows the
    expectation in the message (e.g. " (0: all at once)")."""
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}{note}, got {v!r}")
