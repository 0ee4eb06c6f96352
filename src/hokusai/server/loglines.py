"""Request text made safe for a log line."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with control characters escaped, so that it cannot end a log line and forge the next.

    Paths reach the server percent-decoded: `/x%0A2026-11-27 ... INFO hokusai.access: ...` would otherwise write a
    line of its own choosing.
    """
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
