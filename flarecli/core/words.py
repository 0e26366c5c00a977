"""Counts in messages: ``count(1, "scan")`` is "1 scan", ``count(2, "scan")`` "2 scans"."""

from __future__ import annotations


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for exactly one (``plural`` defaults to singular + s)."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
