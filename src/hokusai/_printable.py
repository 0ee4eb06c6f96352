"""Text from a request or a server made safe to print: for the server's log lines and the CLI's tables alike."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with control characters escaped, so that it can neither end a line and forge the next nor steer a
    terminal.

    Paths reach the server percent-decoded: `/x%0A2026-11-27 ... INFO hokusai.access: ...` would otherwise write a
    log line of its own choosing, and an escape sequence in a key's name or an audited path would rewrite the
    terminal of whoever lists them.
    """
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
