"""Every error the Hokusai SDK raises, in one place.

    HokusaiError
    ├── HokusaiValidationError      bad input (also a ValueError): caught before anything is sent, or ...
    ├── HokusaiConfigurationError   missing or contradictory settings (no key, bad flag value)
    ├── HokusaiConnectionError      the API could not be reached or timed out
    └── HokusaiAPIError             the server answered with an error status
        ├── HokusaiInvalidRequestError  400: ... refused by the server (also a HokusaiValidationError)
        ├── HokusaiAuthError        401: missing, unknown, expired or revoked key
        ├── HokusaiPermissionError  403: the key lacks a scope, or MLflow refused the resource
        ├── HokusaiNotFoundError    404
        ├── HokusaiConflictError    409: e.g. the token is claimed by another model
        └── HokusaiRateLimitError   429 (``retry_after``)

Every error says whether the same request may succeed if sent again later (``should_retry``: a connection error, a
408, 429, 502, 503 or 504; the SDK has already retried those it safely could). Each API error carries the HTTP
``status``, the server's ``error_code``, the ``layer`` that refused (``hokusai-api`` or ``mlflow``), the server's own
message, the request id, and a ``hint`` naming the fix. A validation error caught before sending has the same
attributes: ``error_code`` ``INVALID_PARAMETER_VALUE`` (the server's for the same rule), ``layer`` ``sdk``, no
``status`` and no request id.

Two warnings: :class:`HokusaiKeyMismatchWarning`, when MLflow in this process will send another key than the SDK's,
and :class:`HokusaiRegistrationWarning`, for each of a registration's ``warnings``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

__all__ = [
    "LAYER_API",
    "LAYER_LOCAL",
    "LAYER_MLFLOW",
    "LAYER_SDK",
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
]


class ErrorCode(StrEnum):
    """The ``error_code`` of the platform's errors (docs/troubleshooting.md says what each means and what to do).

    Each compares equal to its text: ``exc.error_code == ErrorCode.TOKEN_ALREADY_CLAIMED``. The codes derived from a
    bare HTTP status are the ones MLflow's client derives, so both clients agree.
    """

    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
    RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"  # MLflow's
    RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    INVALID_STATE = "INVALID_STATE"  # a key that cannot be revoked or rotated again
    TOKEN_ALREADY_CLAIMED = "TOKEN_ALREADY_CLAIMED"
    REGISTRATION_CONFLICT = "REGISTRATION_CONFLICT"  # the same registration before, with another metric or baseline
    TOKEN_MODEL_GONE = "TOKEN_MODEL_GONE"  # a transfer without a model, of a claim no version carries any more
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"


# Which part of the platform answered: the `layer` of the server's error envelope and of every error here.
LAYER_API = "hokusai-api"
LAYER_MLFLOW = "mlflow"  # MLflow itself, through the gateway, or refusing the API's own call
LAYER_SDK = "sdk"  # a rule of hokusai.validation, checked before anything was sent
LAYER_LOCAL = "local"  # the local store of mock mode and the offline fallback


def error_envelope(error_code: str, message: str, layer: str) -> dict[str, str]:
    """The JSON body of every error the platform answers, and what `HokusaiAPIError` is read back from."""
    return {"error_code": error_code, "message": message, "layer": layer}


class HokusaiError(Exception):
    """Base class of every error raised by the SDK.

    Every error has the facts a server's error carries, so that one `except HokusaiError` clause can read them the
    same way; they are `None` where they do not apply (no server answered a connection error).
    """

    status: int | None = None
    error_code: str | None = None
    layer: str | None = None
    request_id: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.user_message = message
        self.hint = hint
        super().__init__(self._compose())

    @property
    def should_retry(self) -> bool:
        """Whether the same request may succeed if sent again later, unchanged."""
        return False

    def _compose(self) -> str:
        return f"{self.user_message} (HINT: {self.hint})" if self.hint else self.user_message

    def with_hint(self, hint: str) -> Self:
        """This error, everything else kept, with another hint: for a caller that knows what to do better."""
        # Not copy.copy: it rebuilds exceptions from their args, which the API errors' keyword-only fields defeat.
        changed = type(self).__new__(type(self))
        changed.__dict__.update(self.__dict__)
        changed.hint = hint
        changed.args = (changed._compose(),)
        return changed

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return f"{class_name}(message={self.user_message!r}, hint={self.hint!r})"


class HokusaiValidationError(HokusaiError, ValueError):
    """An argument broke a rule of :mod:`hokusai.validation`; ``field`` names it and ``problem`` says what is wrong."""

    field: str | None  # always set by a local check; a server's 400 may name none
    # As the server's 400 for the same rule has them, so that one `except` clause can test either the same way.
    error_code: str | None = ErrorCode.INVALID_PARAMETER_VALUE
    layer: str | None = LAYER_SDK

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.problem = message
        super().__init__(f"{field}: {message}")


class HokusaiKeyMismatchWarning(UserWarning):
    """MLflow will act as another key than the SDK's: runs it logs and models the SDK registers get two owners."""


class HokusaiRegistrationWarning(UserWarning):
    """A registration succeeded with a caveat, also listed in the result's ``warnings``.

    For example the run's metric differs from the baseline, or a repeat left out tags it did not apply. Turn it into
    an error with ``warnings.simplefilter("error", HokusaiRegistrationWarning)`` (the registration has happened by
    then); ``strict=True`` makes a baseline mismatch an error instead of a registration.
    """


class HokusaiConfigurationError(HokusaiError):
    """Settings are missing or invalid (no API key, an unparsable flag, a bad URL)."""


class HokusaiConnectionError(HokusaiError):
    """The Hokusai API could not be reached, or it did not answer in time."""

    @property
    def should_retry(self) -> bool:
        return True


# Statuses that say "not now" rather than "not this request": a timeout, a rate limit, an unavailable upstream.
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


class HokusaiAPIError(HokusaiError):
    """The server answered with an error status; attributes carry what it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str,
        layer: str,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.layer = layer
        self.request_id = request_id
        # Named, not super(): in HokusaiInvalidRequestError the next class is HokusaiValidationError.
        HokusaiError.__init__(self, message, hint=hint)

    @property
    def should_retry(self) -> bool:
        return self.status in TRANSIENT_STATUSES

    def _compose(self) -> str:
        where = f"{self.status} {self.error_code} from {self.layer}"
        if self.request_id:
            where += f" (Request ID: {self.request_id})"
        return f"{where}: {super()._compose()}"

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return (
            f"{class_name}(message={self.user_message!r}, status={self.status}, "
            f"error_code={self.error_code!r}, layer={self.layer!r}, request_id={self.request_id!r})"
        )


class HokusaiInvalidRequestError(HokusaiAPIError, HokusaiValidationError):
    """400: the server refused the input, by a rule only it can check (``strict``'s baseline check against the run)
    or one a local check did not cover. Also a :class:`HokusaiValidationError`, so that one ``except`` catches bad
    input wherever it was found; ``field`` is the field the server named, or ``None``.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        self.field = field
        self.problem = _without_field_prefix(message, field)
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


def _without_field_prefix(message: str, field: str | None) -> str:
    """What is wrong with the field: the server's message without the `[Invalid request: ]<field>: ` it starts with."""
    if field is None:
        return message
    for prefix in (f"{field}: ", f"Invalid request: {field}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


class HokusaiAuthError(HokusaiAPIError):
    """401: the key is missing, malformed, unknown, expired or revoked."""


class HokusaiPermissionError(HokusaiAPIError):
    """403: the key lacks a scope, or MLflow's permissions refused the resource."""


class HokusaiNotFoundError(HokusaiAPIError):
    """404: the model, version, token or run does not exist (or is not visible to you)."""


class HokusaiConflictError(HokusaiAPIError):
    """409: the request conflicts with what is stored (a token claimed by another model)."""


class HokusaiRateLimitError(HokusaiAPIError):
    """429: slow down; ``retry_after`` is the server's advice in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
