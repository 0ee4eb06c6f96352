"""Hokusai model registry SDK: register tokenized models with the Hokusai API.

Importing ``hokusai`` is cheap: the registry, its HTTP client and MLflow load on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hokusai.errors import (
    ErrorCode,
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConflictError,
    HokusaiConnectionError,
    HokusaiError,
    HokusaiInvalidRequestError,
    HokusaiKeyMismatchWarning,
    HokusaiNotFoundError,
    HokusaiPermissionError,
    HokusaiRateLimitError,
    HokusaiRegistrationWarning,
    HokusaiValidationError,
)

if TYPE_CHECKING:
    from hokusai._registry import ModelRegistry
    from hokusai.config import setup
    from hokusai.models import BaselineEntry, TokenClaim, TokenizedModel

__version__ = "0.1.0"

__all__ = [
    "BaselineEntry",
    "ErrorCode",
    "HokusaiAPIError",
    "HokusaiAuthError",
    "HokusaiConfigurationError",
    "HokusaiConflictError",
    "HokusaiConnectionError",
    "HokusaiError",
    "HokusaiInvalidRequestError",
    "HokusaiKeyMismatchWarning",
    "HokusaiNotFoundError",
    "HokusaiPermissionError",
    "HokusaiRateLimitError",
    "HokusaiRegistrationWarning",
    "HokusaiValidationError",
    "ModelRegistry",
    "TokenClaim",
    "TokenizedModel",
    "__version__",
    "setup",
]

# Name -> module that defines it; loaded by __getattr__ on first access.
_LAZY = {
    "BaselineEntry": "hokusai.models",
    "ModelRegistry": "hokusai._registry",
    "TokenClaim": "hokusai.models",
    "TokenizedModel": "hokusai.models",
    "setup": "hokusai.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hokusai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
