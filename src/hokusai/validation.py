"""The rules for tokenized-model input, shared by the SDK and the API server so they never disagree."""

from __future__ import annotations

import cmath
import decimal
import json
import math
import numbers
import posixpath
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hokusai._printable import unprintable
from hokusai.errors import HokusaiValidationError

KEY_PREFIX = "hk_live_"  # how every Hokusai API key starts
KEY_MIN_RANDOM_LENGTH = 32  # letters and digits after the prefix (keys are issued with 40)
KEY_MAX_LENGTH = 128
_KEY_SHAPE_RE = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9]{{{KEY_MIN_RANDOM_LENGTH},{KEY_MAX_LENGTH - len(KEY_PREFIX)}}}")
_KEY_SHOWN_LENGTH = len(KEY_PREFIX) + 4  # enough to tell one's keys apart, far too little to help guess one
# Pages of the API's listings (`max_results`): the default and the most one request may ask for.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
KEY_MAX_LIFETIME_DAYS = 3650  # the longest `expires_in_days` a new key may ask for
TOKEN_ID_MAX_LENGTH = 64
METRIC_NAME_MAX_LENGTH = 250  # MLflow's limit for metric keys
MODEL_NAME_MAX_LENGTH = 256
TAG_KEY_MAX_LENGTH = 250  # MLflow's model-registry tag key limit
TAG_VALUE_MAX_LENGTH = 5000  # MLflow's model-registry tag value limit
METADATA_FIELD_MAX_LENGTH = 500
METADATA_JSON_MAX_LENGTH = 4000
DESCRIPTION_MAX_LENGTH = 5000
MAX_USER_TAGS = 100  # each becomes a row MLflow writes and sends with every read of the version
MODEL_URI_MAX_LENGTH = 500  # MLflow keeps a model version's source in a column of 500 characters
# What fits after `runs:/<run id>/` within that, with a run id MLflow generated (32 characters).
ARTIFACT_PATH_MAX_LENGTH = MODEL_URI_MAX_LENGTH - len("runs:/") - 32 - 1

# Tag names are kept compatible with the earlier implementation, so its consumers keep working.
TAG_TOKEN_ID = "hokusai_token_id"
TAG_METRIC = "benchmark_metric"
TAG_BASELINE = "benchmark_value"
TAG_STATUS = "hokusai_status"
TAG_RUN_ID = "mlflow_run_id"
TAG_IS_BASELINE = "is_baseline"
TAG_MODEL_TYPE = "model_type"
TAG_METRICS = "metrics"  # a baseline's run metrics, as one JSON object
TAG_METADATA = "metadata"  # a baseline's metadata, as one JSON object (see validate_metadata)
TAG_REGISTERED_BY = "registered_by"  # who registered a baseline: the platform owns the model it is a version of
MLFLOW_USER_TAG = "mlflow.user"  # MLflow's record of who acted (a run's, a logged model's, a dataset's creator)
STATUS_REGISTERED = "registered"
METADATA_FIELDS = ("eval_spec", "scorer_ref", "primary_metric", "benchmark_spec_id")
METADATA_TAG_PREFIX = "hokusai."
# Baselines of one model type are versions of one registered model that the platform owns, so every user can add
# to it and none can change another's; users may not create models under this prefix themselves.
BASELINE_MODEL_PREFIX = "hokusai-baseline-"
# An MLflow search filter for every baseline model ('-' is no LIKE wildcard), for the server and the local store.
BASELINE_MODELS_FILTER = f"name LIKE '{BASELINE_MODEL_PREFIX}%'"
# The audit log's actor for key changes made straight on the database (`hokusai keys --offline`); no account has it.
OFFLINE_ACTOR = "offline-cli"
RESERVED_TAGS = frozenset({TAG_TOKEN_ID, TAG_METRIC, TAG_BASELINE, TAG_STATUS, TAG_RUN_ID})

_TOKEN_ID_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
# The characters MLflow accepts in metric and tag keys (`validate_param_and_metric_name`, on Linux and macOS).
_METRIC_NAME_RE = re.compile(r"[/\w.\- :]+")
_RUN_ID_RE = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")  # MLflow's own run id pattern
GENERATED_RUN_ID_RE = re.compile(r"[0-9a-f]{32}")  # what MLflow's stores generate (uuid4 hex)
_MODEL_TYPE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}")  # stored lower-cased
_RUNS_URI_RE = re.compile(r"(?i:runs):/(?P<run_id>[^/]+)(?:/(?P<path>.*))?")
# Every action the audit log records: a filter naming another could only ever match nothing.
AUDIT_ACTIONS = (
    "key.create",
    "key.revoke",
    "key.rotate",
    "model.register",
    "model.register_baseline",
    "permission.denied",
    "token.claim",
    "token.model_renamed",
    "token.release",
    "token.transfer",
)
_CONTROL_CHARS = r"\x00-\x1f\x7f"  # a character class's body
_CONTROL_CHARS_RE = re.compile(f"[{_CONTROL_CHARS}]")
_VERSION_NUMBER_RE = re.compile(r"[1-9][0-9]{0,17}")
LATEST_VERSION = "latest"
# The same rules as JSON Schema patterns, so the API's OpenAPI document states exactly what it enforces.
TOKEN_ID_PATTERN = f"^{_TOKEN_ID_RE.pattern}$"
METRIC_NAME_PATTERN = f"^{_METRIC_NAME_RE.pattern}$"
RUN_ID_PATTERN = f"^{_RUN_ID_RE.pattern}$"
MODEL_TYPE_PATTERN = f"^{_MODEL_TYPE_RE.pattern}$"
VERSION_PATTERN = f"^(?:{_VERSION_NUMBER_RE.pattern}|{LATEST_VERSION})$"
NO_CONTROL_CHARS_PATTERN = f"^[^{_CONTROL_CHARS}]+$"


def json_nodes(value: object) -> Iterator[tuple[str, object]]:
    """Every value within JSON `value`, `value` first and then in document order, with its path: object keys (shown
    escaped) and list indexes joined by dots, `""` for `value` itself."""
    # A stack, not recursion: JSON nested a thousand deep must be a 400, not Python's RecursionError (a 500).
    pending: list[tuple[str, object]] = [("", value)]
    while pending:
        path, item = pending.pop()
        yield path, item
        if isinstance(item, dict):
            pending.extend(reversed([(json_path(path, key), child) for key, child in item.items()]))
        elif isinstance(item, list):
            pending.extend(reversed([(json_path(path, index), child) for index, child in enumerate(item)]))


def json_path(path: str, step: object) -> str:
    """`path` (as `json_nodes` gives it) one key or index further; a key's unpaired surrogates shown escaped."""
    return f"{path}.{_escaped(step)}" if path else _escaped(step)


def unpaired_surrogate_at(value: object) -> str | None:
    """Where JSON `value` holds text with an unpaired UTF-16 surrogate, as a dotted path (a key's own surrogates shown
    escaped); `None` when nowhere. `"\\ud800"` is valid JSON but not Unicode: no database or UTF-8 body takes it."""
    for path, item in json_nodes(value):
        if isinstance(item, str) and _has_surrogate(item):
            return path or "body"
        if isinstance(item, dict):
            key = next((key for key in item if _has_surrogate(key)), None)
            if key is not None:
                return json_path(path, key)
    return None


def first_repeated(names: Iterable[str]) -> str | None:
    """The first name given a second time, or `None`."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _has_surrogate(text: object) -> bool:
    return isinstance(text, str) and any("\ud800" <= char <= "\udfff" for char in text)


def _escaped(key: object) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


KEY_NAME_MAX_LENGTH = 128


def validate_key_name(name: object) -> str:
    """A key's label: shown in `hokusai keys list`, so printable characters only (an escape sequence would rewrite the
    admin's terminal, a right-to-left override would reorder what it shows; security reviews, 2026-11-28). What
    printable means is `_printable.unprintable`'s, what the CLI escapes: joiners and no-break spaces are text."""
    name = _bounded_text("name", name, KEY_NAME_MAX_LENGTH)
    found = next((char for char in name if unprintable(char)), None)
    if found is not None:
        raise HokusaiValidationError(
            "name",
            f"must contain only printable characters (no control or format characters; found U+{ord(found):04X})",
        )
    return name


def _bounded_text(field: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HokusaiValidationError(field, "must be a non-empty string")
    if len(value) > max_length:
        raise HokusaiValidationError(field, f"must be at most {max_length} characters")
    return value


def normalize_token_id(token_id: object) -> str:
    """Return the canonical (upper-case) token id, or raise if it breaks the rules."""
    if not isinstance(token_id, str):
        raise HokusaiValidationError("token_id", "must be a string")
    if not token_id:
        raise HokusaiValidationError("token_id", "must not be empty")
    if len(token_id) > TOKEN_ID_MAX_LENGTH:
        raise HokusaiValidationError("token_id", f"must be at most {TOKEN_ID_MAX_LENGTH} characters")
    if not token_id.isascii() or _TOKEN_ID_RE.fullmatch(token_id) is None:
        raise HokusaiValidationError(
            "token_id", "may contain only ASCII letters, digits and hyphens, with no hyphen at either end"
        )
    return token_id.upper()


def validate_metric_name(metric_name: object) -> str:
    if not isinstance(metric_name, str) or not metric_name.strip():
        raise HokusaiValidationError("metric_name", "must be a non-empty string")
    if metric_name != metric_name.strip():
        raise HokusaiValidationError("metric_name", "must not start or end with whitespace")
    if len(metric_name) > METRIC_NAME_MAX_LENGTH:
        raise HokusaiValidationError("metric_name", f"must be at most {METRIC_NAME_MAX_LENGTH} characters")
    _check_mlflow_key("metric_name", metric_name)
    return metric_name


def _check_mlflow_key(field: str, name: str) -> None:
    """MLflow's rules for a metric or tag key (`_validate_metric_name`, `_validate_tag_name`)."""
    if _METRIC_NAME_RE.fullmatch(name) is None:
        raise HokusaiValidationError(
            field, "may contain only letters, digits, '_', '-', '.', ' ', ':' and '/' (as MLflow requires)"
        )
    if _resolves_elsewhere_as_path(name):
        raise HokusaiValidationError(
            field,
            "must not start with '/' or '..', end with '/', or hold '//' or a '.' or '..' segment (MLflow may store "
            "it as a file path, and refuses a name that would land on another)",
        )


def _resolves_elsewhere_as_path(name: str) -> bool:
    # MLflow may store these names as files, and refuses one that would land on another name (`path_not_unique`).
    normalized = posixpath.normpath(name)
    return normalized != name or normalized == "." or normalized.startswith(("..", "/"))


FLOAT_UNDERFLOW = "is too small for a 64-bit float: it would be stored as 0"


def validate_baseline_value(baseline_value: object) -> float:
    # bool is an int subclass: True would silently become a baseline of 1.0. NumPy's numbers are numbers.Real; a
    # Decimal is not, yet converts as exactly as a float can hold it.
    if isinstance(baseline_value, bool) or not isinstance(baseline_value, numbers.Real | decimal.Decimal):
        raise HokusaiValidationError("baseline_value", "must be a number (not a bool or a string)")
    try:
        value = float(baseline_value)
    except OverflowError as exc:  # an int beyond float range, e.g. 10**400
        raise HokusaiValidationError(
            "baseline_value", "is too large for a 64-bit float (at most about 1.8e308)"
        ) from exc
    except ValueError as exc:  # a signalling NaN, Decimal("sNaN"), which refuses to convert
        raise HokusaiValidationError("baseline_value", _NOT_FINITE) from exc
    if not math.isfinite(value):
        raise HokusaiValidationError("baseline_value", _NOT_FINITE)
    if value == 0.0 and baseline_value != 0:  # an exact number such as Decimal("1e-400")
        raise HokusaiValidationError("baseline_value", FLOAT_UNDERFLOW)
    return value


_NOT_FINITE = "must be finite (not NaN or infinity)"


# The server's 401 for a key of the wrong shape, and the SDK's refusal of one before sending it: the same words.
MALFORMED_KEY_MESSAGE = (
    f"The API key is malformed: Hokusai keys are `{KEY_PREFIX}` followed by at least {KEY_MIN_RANDOM_LENGTH} "
    "letters and digits. Check that it was copied whole, without quotes or spaces."
)
KEY_ID_PREFIX = "key_"
KEY_ID_HEX_DIGITS = 16
_KEY_ID_RE = re.compile(f"{KEY_ID_PREFIX}[0-9a-f]{{{KEY_ID_HEX_DIGITS}}}")


def looks_like_key_id(candidate: str) -> bool:
    """Whether `candidate` could name a key: the server makes ids of `key_` and 16 hex digits."""
    return _KEY_ID_RE.fullmatch(candidate) is not None


def looks_like_key(candidate: str) -> bool:
    """A cheap shape check, so garbage never reaches the database."""
    return len(candidate) <= KEY_MAX_LENGTH and _KEY_SHAPE_RE.fullmatch(candidate) is not None


def key_prefix(key: str) -> str:
    """The displayable start of a key, e.g. ``hk_live_AbCd``: what the server stores and lists, and the SDK shows."""
    return key[:_KEY_SHOWN_LENGTH]


def validate_audit_action(action: str) -> str:
    if action not in AUDIT_ACTIONS:
        raise HokusaiValidationError("action", f"must be one of {', '.join(AUDIT_ACTIONS)}")
    return action


def tag_value_problem(key: str, value: object) -> str | None:
    """What is wrong with a tag's value, or `None`: tags hold text, and finite numbers and booleans stored as text."""
    if isinstance(value, str):
        return None
    if isinstance(value, numbers.Number):  # bools and numpy's numbers are numbers
        # NaN and the infinities were stored as "nan" and "inf", which read back as no number a user meant.
        return None if _is_finite(value) else f"the value of '{key}' {_NOT_FINITE}"
    kind = {type(None): "null", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    return f"the value of '{key}' must be a string, a number or a boolean, not {kind}"


def _is_finite(number: numbers.Number) -> bool:
    if isinstance(number, decimal.Decimal):  # its signalling NaN refuses to convert
        return number.is_finite()
    try:
        return cmath.isfinite(number)  # type: ignore[arg-type]  # every number type here converts to complex
    except OverflowError:  # an int or a fraction beyond a float's range: large, but finite
        return True


def holds_control_character(text: str) -> bool:
    return _CONTROL_CHARS_RE.search(text) is not None


def validate_model_name(model_name: object) -> str:
    model_name = _bounded_text("model_name", model_name, MODEL_NAME_MAX_LENGTH)
    if model_name != model_name.strip():
        raise HokusaiValidationError("model_name", "must not start or end with whitespace")
    if _CONTROL_CHARS_RE.search(model_name):
        raise HokusaiValidationError("model_name", "must not contain control characters")
    if model_name in (".", ".."):
        # No model may have such a name, and HTTP clients resolve it out of a URL path: a lookup would reach another
        # endpoint (a 404 saying to check the API URL) instead of being told why.
        raise HokusaiValidationError("model_name", "must not be '.' or '..' (as MLflow requires)")
    return model_name


def validate_version(version: str | None) -> str | None:
    """A tokenized model's version as a caller names it: the number, or `None` for `latest` (any case) or none.

    `latest` is the newest version that carries a token, not merely the newest version of the model.
    """
    if version is None or version.lower() == LATEST_VERSION:
        return None
    if _VERSION_NUMBER_RE.fullmatch(version) is None:
        raise HokusaiValidationError("version", "must be a positive version number or 'latest'")
    return version


def is_baseline_model_name(name: str) -> bool:
    """Whether `name` is under the baselines' reserved prefix; case and surrounding spaces do not get around it."""
    return name.strip().lower().startswith(BASELINE_MODEL_PREFIX)


def validate_tokenized_model_name(model_name: object) -> str:
    """A name to register a tokenized model under: a valid model name outside the baselines' reserved prefix."""
    model_name = validate_model_name(model_name)
    if "/" in model_name or ":" in model_name:
        raise HokusaiValidationError("model_name", "must not contain '/' or ':' (as MLflow requires)")
    if _resolves_elsewhere_as_path(model_name):
        raise HokusaiValidationError("model_name", "must not be '.', '..' or start with '..' (as MLflow requires)")
    if is_baseline_model_name(model_name):
        raise HokusaiValidationError(
            "model_name",
            f"names starting with '{BASELINE_MODEL_PREFIX}' are reserved for baselines "
            "(register them with `hokusai models baseline` or the SDK's register_baseline_via_api)",
        )
    return model_name


def validate_run_id(run_id: object, field: str = "mlflow_run_id") -> str:
    if not isinstance(run_id, str) or _RUN_ID_RE.fullmatch(run_id) is None:
        raise HokusaiValidationError(field, "is not a valid MLflow run id")
    return run_id


def normalize_model_type(model_type: object) -> str:
    """Return the canonical (lower-case) model type, or raise if it breaks the rules.

    Lower-cased as token ids are upper-cased: the type names a registered model (`hokusai-baseline-<type>`), whose
    name is case-sensitive, and `Classification` must not start a second series beside `classification`.
    """
    if not isinstance(model_type, str) or _MODEL_TYPE_RE.fullmatch(model_type) is None:
        raise HokusaiValidationError(
            "model_type", "must be 1-64 ASCII letters, digits, '_' or '-', starting with a letter or digit"
        )
    return model_type.lower()


def baseline_model_name(model_type: str) -> str:
    """The registered model that holds the baselines of `model_type` (validate it first)."""
    return BASELINE_MODEL_PREFIX + model_type


def baseline_model_type(model_name: str) -> str:
    """The model type a baseline model's name holds, the inverse of `baseline_model_name` (for a name that
    `is_baseline_model_name` accepts)."""
    return model_name.strip()[len(BASELINE_MODEL_PREFIX) :]


def run_model_uri(run_id: object, artifact_path: object) -> str:
    """`runs:/<run id>/<artifact path>`: the model a run logged as `artifact_path` (the `name` given to log_model).

    A fault of `artifact_path` is named as that field, not as the URI the caller never sent.
    """
    if not isinstance(artifact_path, str):
        raise HokusaiValidationError("artifact_path", "must be a string: the name given to log_model, e.g. 'model'")
    if not artifact_path:
        # It would name the run's whole artifact root, not a model.
        raise HokusaiValidationError("artifact_path", "must not be empty: the name given to log_model, e.g. 'model'")
    if len(artifact_path) > ARTIFACT_PATH_MAX_LENGTH:
        raise HokusaiValidationError("artifact_path", f"must be at most {ARTIFACT_PATH_MAX_LENGTH} characters")
    if artifact_path != artifact_path.strip() or _CONTROL_CHARS_RE.search(artifact_path):
        raise HokusaiValidationError("artifact_path", "must not contain whitespace at the ends or control characters")
    model_uri = f"runs:/{validate_run_id(run_id)}/{artifact_path.strip('/')}"
    if len(model_uri) > MODEL_URI_MAX_LENGTH:
        raise HokusaiValidationError(
            "artifact_path",
            f"is too long: runs:/<run id>/<artifact_path> must be at most {MODEL_URI_MAX_LENGTH} characters "
            f"({ARTIFACT_PATH_MAX_LENGTH} for the path with a run id MLflow generated)",
        )
    return validate_model_uri(model_uri)


def validate_model_uri(model_uri: object) -> str:
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise HokusaiValidationError("model_uri", "must be a non-empty string")
    if model_uri != model_uri.strip() or _CONTROL_CHARS_RE.search(model_uri):
        raise HokusaiValidationError("model_uri", "must not contain whitespace at the ends or control characters")
    if len(model_uri) > MODEL_URI_MAX_LENGTH:
        raise HokusaiValidationError("model_uri", f"must be at most {MODEL_URI_MAX_LENGTH} characters")
    try:
        urllib.parse.urlparse(model_uri)
    except ValueError as exc:  # e.g. an unclosed `[` where a host would be
        raise HokusaiValidationError("model_uri", f"is not a valid URI: {exc}") from None
    scheme = uri_scheme(model_uri)
    if scheme == "runs":
        run_id_from_uri(model_uri)
    elif scheme == "models":
        _check_models_uri(model_uri)
    else:
        _check_remote_source(model_uri, scheme)
    return model_uri


def _check_remote_source(model_uri: str, scheme: str) -> None:
    """Refuse a run id or a path on some machine's disk, which MLflow's server refuses without a run (naming neither
    field): before anything is sent or queued, and on the server before a token is claimed for it."""
    if GENERATED_RUN_ID_RE.fullmatch(model_uri):
        raise HokusaiValidationError(
            "model_uri",
            f"'{model_uri}' is a run id, not a model URI: use runs:/{model_uri}/model (or the name the run gave "
            "log_model in place of model), or give it as mlflow_run_id",
        )
    if scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive (`C:\\models\\churn`)
        raise HokusaiValidationError(
            "model_uri",
            f"'{model_uri}' is a local path, which the platform cannot load: use runs:/<run id>/<path>, "
            "models:/<model id> (what log_model returns), models:/<name>/<version>, or a storage URI such as s3://…",
        )


def uri_scheme(uri: str) -> str:
    """The scheme of `uri` in lower case, as MLflow tells `runs:/` and `models:/` apart (`MODELS:/x/1` is one too)."""
    try:
        return urllib.parse.urlparse(uri).scheme
    except ValueError:
        return ""


_MODELS_URI_FORMS = "models:/<model id>, models:/<name>/<version>, models:/<name>@<alias> or models:/<name>/latest"


def _check_models_uri(model_uri: str) -> None:
    """A `models:/` URI the registry can pin to one version; MLflow answered the others with a 500.

    A stage (`models:/<name>/Production`) names no fixed version and is deprecated in MLflow 3.
    """
    parsed = parse_models_uri(model_uri)
    if parsed is None:
        raise HokusaiValidationError("model_uri", f"must look like {_MODELS_URI_FORMS}")
    if parsed.stage is not None:
        raise HokusaiValidationError(
            "model_uri",
            f"names the stage '{parsed.stage}', which MLflow 3 deprecates and which names no fixed version: use "
            f"models:/{parsed.name}/<version> or models:/{parsed.name}@<alias>",
        )
    if parsed.version is not None and not _VERSION_NUMBER_RE.fullmatch(parsed.version):
        raise HokusaiValidationError(
            "model_uri",
            f"names version '{parsed.version}'; versions are numbers from 1, of at most 18 digits",
        )


@dataclass(frozen=True)
class ModelsUri:
    """A ``models:/`` URI as MLflow reads it: a logged model, or a registered model's version, alias, stage or latest.

    ``model_id`` is set for ``models:/<model id>`` (what MLflow 3's ``log_model`` returns); otherwise ``name`` and
    at most one of ``version``, ``alias`` and ``stage`` (none of them: the latest version).
    """

    model_id: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None


def parse_models_uri(model_uri: str) -> ModelsUri | None:
    """``model_uri`` read by MLflow's own rules (``_parse_model_uri``); ``None`` when MLflow would not accept it."""
    try:
        parsed = urllib.parse.urlparse(model_uri, allow_fragments=False)
    except ValueError:
        return None
    if parsed.scheme != "models" or not parsed.path.startswith("/") or len(parsed.path) <= 1:
        return None
    parts = parsed.path.lstrip("/").split("/")
    if len(parts) > 2 or not parts[0].strip():
        return None
    if len(parts) == 2:
        name, suffix = parts
        if not suffix.strip():
            return None
        if suffix.isdigit():
            return ModelsUri(name=name, version=suffix)
        return ModelsUri(name=name) if suffix.lower() == "latest" else ModelsUri(name=name, stage=suffix)
    if "@" in parts[0]:
        name, _, alias = parts[0].rpartition("@")
        return ModelsUri(name=name, alias=alias) if name and alias.strip() else None
    return ModelsUri(model_id=parts[0])


def run_id_from_uri(model_uri: str) -> str | None:
    """The run id of a ``runs:/<run id>/<path>`` URI; ``None`` for any other scheme."""
    if uri_scheme(model_uri) != "runs":
        return None
    match = _RUNS_URI_RE.fullmatch(model_uri)
    if match is None:
        raise HokusaiValidationError("model_uri", "must look like runs:/<run id>/<artifact path>")
    return validate_run_id(match["run_id"], field="model_uri")


def validate_description(description: object) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_LENGTH:
        raise HokusaiValidationError("description", f"must be a string of at most {DESCRIPTION_MAX_LENGTH} characters")
    _refuse_nul("description", description)
    return description


def _refuse_nul(field: str, text: str, *, tag: str | None = None) -> None:
    """Text MLflow stores may hold any character but NUL, which PostgreSQL refuses (MLflow's 500, after a token was
    claimed); refused everywhere, so that a registration accepted on SQLite is accepted on PostgreSQL too."""
    if "\x00" in text:
        subject = f"the value of '{tag}' " if tag is not None else ""
        raise HokusaiValidationError(field, f"{subject}must not contain NUL characters (U+0000)")


def is_reserved_tag(key: str) -> bool:
    """Whether a model-version tag is Hokusai's: set once at registration, never by users afterwards."""
    return key in RESERVED_TAGS or key.startswith(METADATA_TAG_PREFIX)


def validate_user_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    """User tags as strings; they may not overwrite the tags that make a model tokenized."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise HokusaiValidationError("tags", "must be a mapping of tag names to values")
    if len(tags) > MAX_USER_TAGS:
        raise HokusaiValidationError("tags", f"at most {MAX_USER_TAGS} tags may be set on one registration")
    clean: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.strip() or len(key) > TAG_KEY_MAX_LENGTH:
            raise HokusaiValidationError("tags", f"tag names must be non-empty strings of at most {TAG_KEY_MAX_LENGTH}")
        _check_mlflow_key("tags", key)
        if is_reserved_tag(key):
            raise HokusaiValidationError("tags", f"'{key}' is reserved for Hokusai and cannot be set directly")
        if key == MLFLOW_USER_TAG:
            raise HokusaiValidationError("tags", f"'{key}' names who acted, which MLflow records itself")
        problem = tag_value_problem(key, value)
        if problem is not None:
            raise HokusaiValidationError("tags", problem)
        text = str(value)
        if len(text) > TAG_VALUE_MAX_LENGTH:
            raise HokusaiValidationError("tags", f"the value of '{key}' exceeds {TAG_VALUE_MAX_LENGTH} characters")
        _refuse_nul("tags", text, tag=key)
        clean[key] = text
    return clean


def validate_metadata_fields(fields: Mapping[str, object]) -> dict[str, str]:
    """The earlier implementation's optional metadata, as ``hokusai.<field>`` tags of at most 500 characters."""
    tags: dict[str, str] = {}
    for name in METADATA_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > METADATA_FIELD_MAX_LENGTH:
            raise HokusaiValidationError(name, f"must be a non-empty string of at most {METADATA_FIELD_MAX_LENGTH}")
        if value != value.strip():  # as model and metric names: what is stored is what was sent, or a refusal
            raise HokusaiValidationError(name, "must not start or end with whitespace")
        _refuse_nul(name, value)
        tags[METADATA_TAG_PREFIX + name] = value
    return tags


@dataclass(frozen=True)
class RegistrationFields:
    """A tokenized model's registration after every rule here: what the SDK sends and what the API accepts."""

    model_uri: str
    model_name: str
    token_id: str
    metric_name: str
    baseline_value: float
    tags: dict[str, str]  # the user's
    metadata: dict[str, str]  # `hokusai.<field>` tags (METADATA_FIELDS)
    description: str | None


def validate_registration(
    *,
    model_uri: object,
    model_name: object,
    token_id: object,
    metric_name: object,
    baseline_value: object,
    tags: Mapping[str, object] | None,
    description: object,
    metadata: Mapping[str, object],
) -> RegistrationFields:
    """Apply every registration rule, in the order of the fields, so the SDK and the API refuse the same way."""
    return RegistrationFields(
        model_uri=validate_model_uri(model_uri),
        model_name=validate_tokenized_model_name(model_name),
        token_id=normalize_token_id(token_id),
        metric_name=validate_metric_name(metric_name),
        baseline_value=validate_baseline_value(baseline_value),
        tags=validate_user_tags(tags),
        metadata=validate_metadata_fields(metadata),
        description=validate_description(description),
    )


def validate_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    """Baseline metadata as compact JSON, or ``None``; bounded so it fits in one MLflow tag.

    Empty metadata is no metadata, from the SDK and straight over the API alike: a repeat sending ``{}`` must not
    read as metadata that differs from a version registered without any.
    """
    if metadata is None or (isinstance(metadata, Mapping) and not metadata):
        return None
    if not isinstance(metadata, Mapping):
        raise HokusaiValidationError("metadata", "must be a JSON object")
    try:
        encoded = json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HokusaiValidationError("metadata", f"must be JSON-serialisable with finite numbers ({exc})") from exc
    if len(encoded) > METADATA_JSON_MAX_LENGTH:
        raise HokusaiValidationError("metadata", f"must encode to at most {METADATA_JSON_MAX_LENGTH} characters")
    return encoded


METRIC_REL_TOLERANCE = 1e-6
METRIC_ABS_TOLERANCE = 1e-9


def baseline_mismatch(
    *, run_id: str, metrics: Mapping[str, float], metric_name: str, baseline_value: float
) -> str | None:
    """Why the run's logged metric does not confirm the claimed baseline, or `None` when it does."""
    value = metrics.get(metric_name)
    if value is None:
        return f"run '{run_id}' has no metric '{metric_name}' to confirm the baseline {baseline_value!r}"
    if math.isclose(value, baseline_value, rel_tol=METRIC_REL_TOLERANCE, abs_tol=METRIC_ABS_TOLERANCE):
        return None
    return f"metric '{metric_name}' of run '{run_id}' is {value!r}, not the baseline {baseline_value!r}"


def baseline_check(
    *, run_id: str | None, metrics: Mapping[str, float] | None, metric_name: str, baseline_value: float, strict: bool
) -> list[str]:
    """The check every registration makes: `[]` when the source's run confirms the baseline, else a warning.

    `metrics` is `None` when the run could not be read. With `strict` the warning is a `HokusaiValidationError`
    instead, so a source without a readable run (an `s3://` path, a version whose run is unknown or private) is
    refused too: nothing confirms its baseline.
    """
    problem: str | None
    if run_id is None:
        problem = f"the source has no run, so no logged metric confirms the baseline {baseline_value!r}"
    elif metrics is None:
        problem = f"run '{run_id}' of the source could not be read, so no logged metric confirms the baseline"
    else:
        problem = baseline_mismatch(
            run_id=run_id, metrics=metrics, metric_name=metric_name, baseline_value=baseline_value
        )
    if problem is None:
        return []
    if strict:
        # The run has no such metric: the metric's name is what to fix, not the baseline.
        missing = run_id is not None and metrics is not None and metric_name not in metrics
        field = "metric_name" if missing else "baseline_value"
        raise HokusaiValidationError(field, problem + " (strict mode)")
    return [problem]


def repeat_conflict(
    *, version_label: str, registered: Mapping[str, str], metric_name: str, baseline_value: float
) -> str | None:
    """Why a repeated registration (same model, token and source) cannot just return the version made before.

    A repeat is idempotent only when it asks for what is stored: a version's metric and baseline never change, so a
    different one is refused rather than dropped without a word. `None` when the repeat matches.
    """
    stored_metric, stored_baseline = registered.get(TAG_METRIC), registered.get(TAG_BASELINE)
    try:
        same_baseline = stored_baseline is not None and float(stored_baseline) == baseline_value
    except ValueError:
        same_baseline = False
    if stored_metric == metric_name and same_baseline:
        return None
    return (
        f"{version_label} is already registered for this token from this source, with metric '{stored_metric}' and "
        f"baseline {stored_baseline}; this request gives '{metric_name}' and {baseline_value!r}. A registered "
        "version's metric and baseline never change: repeat the original values, or register a new version from a "
        "new run."
    )


def repeat_leaves_out(
    *,
    version_label: str,
    registered_tags: Mapping[str, str],
    registered_description: str | None,
    tags: Mapping[str, str],
    description: str | None,
) -> str | None:
    """The warning for a repeat whose own tags or description differ from the version it returns; `None` if none do.

    A repeat returns the version made before and changes nothing on it (a retry must not re-write what its owner
    has since changed in MLflow), so a changed tag or description would otherwise be dropped without a word.
    """
    changed = [
        f"tag '{key}'" for key, value in tags.items() if key not in RESERVED_TAGS and registered_tags.get(key) != value
    ]
    if description is not None and description != (registered_description or ""):
        changed.append("description")
    if not changed:
        return None
    listed = changed[0] if len(changed) == 1 else f"{', '.join(changed[:-1])} and {changed[-1]}"
    differ = "differs from the version's and was" if len(changed) == 1 else "differ from the version's and were"
    return (
        f"{version_label} already holds this registration, and a repeat changes nothing: this request's {listed} "
        f"{differ} not applied. Change them in MLflow "
        "(MlflowClient.set_model_version_tag, update_model_version)."
    )


def no_tokenized_model(model_name: str) -> str:
    """The 404 message for a model no token is bound to: never tokenized, all released, or no such model at all."""
    return f"No tokenized model '{model_name}': no token is bound to a model of that name."


def token_already_claimed(token_id: str, model_name: str, *, yours: bool, same_name: bool = False) -> str:
    """The 409 message for a token another model holds: `model_name` holds it, the caller's own model when `yours`.

    Another account's holder is named by its model alone, never its owner. `same_name`: it has the very name the
    caller registers, where "claimed by model 'x'" would read as nonsense; nor may the message say that model exists,
    since a claim outlives its model.
    """
    if yours:
        where = f"your model '{model_name}'"
        fix = f"register new versions under '{model_name}', or choose another token id"
    else:
        where = (
            f"another account, under model name '{model_name}' (model names are shared by everyone, as in MLflow)"
            if same_name
            else f"model '{model_name}'"
        )
        fix = "choose another token id, or ask an admin to transfer this one"
    return f"Token '{token_id}' is already claimed by {where}. A token belongs to one model: {fix}."


def token_not_claimed(token_id: str) -> str:
    """The 404 message for a token no model holds: never claimed, or released."""
    return f"Token '{token_id}' is not claimed."  # the SDK's hint says what to do (`_client._hint`)


def token_not_held(model_name: str, version: str, token_id: str) -> str:
    """The 404 message for a version whose token tag names a token its model no longer holds."""
    return (
        f"Version {version} of model '{model_name}' was registered with token '{token_id}', which that model no longer "
        "holds (the token was released or moved to another model): it is not a tokenized model any more."
    )


def baseline_repeat_leaves_out(
    *, version_label: str, registered_metadata: str | None, metadata_json: str | None
) -> str | None:
    """The warning for a repeated baseline whose metadata differs from the version it returns; `None` if it does not.

    The same run's model twice is one baseline, returned as it is: its metadata is not replaced by a repeat's.
    """
    if metadata_json is None or metadata_json == registered_metadata:
        return None
    return (
        f"{version_label} is already this run's model as a baseline, and a repeat changes nothing: this request's "
        f"metadata differs from the version's and was not applied (the version's '{TAG_METADATA}' tag in MLflow "
        "holds it; baselines are shared, so an admin changes it)."
    )


def tokenized_tags(*, token_id: str, metric_name: str, baseline_value: float, run_id: str | None) -> dict[str, str]:
    """The reserved tags that make a model version a tokenized model."""
    tags = {
        TAG_TOKEN_ID: token_id,
        TAG_METRIC: metric_name,
        TAG_BASELINE: repr(baseline_value),
        TAG_STATUS: STATUS_REGISTERED,
    }
    if run_id is not None:
        tags[TAG_RUN_ID] = run_id
    return tags


_OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
OWNER_PATTERN = f"^{_OWNER_RE.pattern}$"


SCOPES = ("read", "write", "admin")  # in rank order: admin implies write, and write implies read


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """A key's scopes from `read,write` or a list; `ValueError` for none or an unknown one."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    clean = frozenset(item.strip().lower() for item in items if item.strip())
    unknown = clean - set(SCOPES)
    if not clean or unknown:
        raise ValueError(f"must be one or more of {', '.join(SCOPES)}, comma-separated; got {items!r}")
    return clean


def serialize_scopes(scopes: frozenset[str]) -> str:
    return ",".join(scope for scope in SCOPES if scope in scopes)


def validate_owner(owner: object, field: str = "owner") -> str:
    """Account names double as MLflow usernames, so they stay short and URL-safe. `field`: where it was given."""
    if not isinstance(owner, str) or _OWNER_RE.fullmatch(owner) is None:
        raise HokusaiValidationError(
            field, "must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    if owner.lower() == OFFLINE_ACTOR:  # in any case: `Offline-CLI` would pass for it in the audit log
        raise HokusaiValidationError(field, f"'{OFFLINE_ACTOR}' is the audit log's name for `--offline` changes")
    return owner
