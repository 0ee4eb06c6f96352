"""MLflow search filter strings that user text cannot break, for the API's registry and the SDK's local store.

MLflow's filter grammar strips the quotes around a value and keeps the rest verbatim: it has no escapes, so a quote
inside a value would end the string early. Only `IN (...)` lists are read with Python's literal parser.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from hokusai.validation import TAG_TOKEN_ID

__all__ = ["filter_equals", "filter_in", "versions_carrying"]

_SAFE_EQUALS_VALUE = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_LIST_CHARS = frozenset(string.ascii_letters + string.digits + " -_.:/@")


def filter_equals(value: str) -> str:
    """`'value'` for an `=` comparison; only ids we validated (token ids, run ids) qualify."""
    if _SAFE_EQUALS_VALUE.fullmatch(value) is None:
        raise ValueError(f"{value!r} cannot be compared with '=' in an MLflow filter; use filter_in()")
    return f"'{value}'"


def filter_in(values: Iterable[str]) -> str:
    """`('a', 'b')` for an `IN` clause, any text allowed: every unsafe character becomes a Python escape."""
    return "(" + ", ".join(_python_literal(value) for value in values) + ")"


def _python_literal(value: str) -> str:
    escaped = []
    for char in value:
        code = ord(char)
        if char in _SAFE_LIST_CHARS:
            escaped.append(char)
        elif code < 0x100:
            escaped.append(f"\\x{code:02x}")
        elif code < 0x10000:
            escaped.append(f"\\u{code:04x}")
        else:
            escaped.append(f"\\U{code:08x}")
    return "'" + "".join(escaped) + "'"


def versions_carrying(model_name: str, token_id: str) -> str:
    """The search filter for the versions of `model_name` tagged with `token_id`."""
    return f"name IN {filter_in([model_name])} AND tags.{TAG_TOKEN_ID} = {filter_equals(token_id)}"
