"""Value checks shared by several configuration sections."""

from __future__ import annotations


def nonempty_globs(value: list[str]) -> str | None:
    """For ``setting(validate=...)``: every glob must be a non-empty pattern."""
    for pattern in value:
        if not pattern:
            return "an empty pattern matches nothing; remove it"
    return None
