"""Text from a request or a server made safe to print: for the server's log lines and the CLI's tables alike."""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """`text` with the characters `unprintable` names escaped, and backslashes doubled, so that it can neither end a
    line and forge the next nor steer a terminal.

    A path the server decodes (`/x%0A2026-11-27 ... INFO hokusai.access: ...`) would otherwise write a log line of
    its own choosing, and an escape sequence in a key's name or an audited path would rewrite the terminal of
    whoever lists them.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    # A backslash is doubled, so that an escape printed here never reads the same as text that was sent.
    if char == "\\":
        return "\\\\"
    return char.encode("unicode_escape").decode("ascii") if unprintable(char) else char


def unprintable(char: str) -> bool:
    """Whether `char` could end a line, steer a terminal or reorder the text around it: a control, a format character
    (a right-to-left override, a zero-width space), a line or paragraph separator, a lone surrogate, a private-use or
    unassigned character. The two joiners are format characters that Persian and Indic scripts and emoji sequences
    need, and are kept; so are spaces other than ' ' (a no-break space pasted with a name)."""
    return unicodedata.category(char) in _UNPRINTABLE_CATEGORIES and char not in _JOINERS


# Unassigned ("Cn") too: a later Unicode may make the character a format character, as 15.0 did U+13439.
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")  # zero-width non-joiner and joiner
