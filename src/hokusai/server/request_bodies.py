"""Request bodies the gateway reads before MLflow does: the checks that refuse one, and the owner stamped on what a
user creates (MLflow keeps whatever the client claims).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from hokusai.errors import ErrorCode
from hokusai.server.errors import ApiError
from hokusai.server.paths import rest_and_ajax
from hokusai.validation import BASELINE_MODEL_PREFIX, MLFLOW_USER_TAG, is_baseline_model_name, is_reserved_tag

REWRITTEN_BODY_LIMIT = 1024 * 1024
_TOO_DEEP = "The request body nests JSON too deeply to be read (MLflow's calls take flat objects); nothing was sent."

Refusal = Callable[[dict[str, Any]], str | None]

BODY_READ = "hokusai.body_read"  # in an ASGI scope: the request's body was read whole, nothing is left to drain


def _baseline_name_refused(field: str) -> Refusal:
    """Refuse naming a registered model under the baselines' prefix, held in `field`.

    Baseline models belong to the platform (see `registry.baselines.register_baseline`); a user who created one
    first would own every later baseline of its type, and could delete them.
    """

    def refusal(payload: dict[str, Any]) -> str | None:
        name = payload.get(field)
        if not (isinstance(name, str) and is_baseline_model_name(name)):
            return None
        return (
            f"Registered model names starting with '{BASELINE_MODEL_PREFIX}' are reserved for Hokusai's baselines. "
            "Register a baseline with `hokusai models baseline`, the SDK's register_baseline_via_api or POST "
            "/api/v1/models/baseline, or choose another name."
        )

    return refusal


def _hokusai_tags_refused(tag_keys: Callable[[dict[str, Any]], list[object]]) -> Refusal:
    """Refuse setting or removing the version tags Hokusai writes at registration, named by `tag_keys`.

    A tokenized version's token, metric and baseline are fixed when it is registered; the owner holds MANAGE on the
    model, so MLflow alone would let them rewrite the baseline, or tag a version with another user's token.
    """

    def refusal(payload: dict[str, Any]) -> str | None:
        reserved = sorted({key for key in tag_keys(payload) if isinstance(key, str) and is_reserved_tag(key)})
        if not reserved:
            return None
        source = payload.get("source")
        if isinstance(source, str) and source.lower().startswith("models:/"):
            return _copy_of_tokenized_refused(reserved[0], source, payload.get("name"))
        return (
            f"Tag '{reserved[0]}' belongs to Hokusai: it is set when a model is registered through "
            "POST /api/v1/models/tokenized, and a registered version's token, metric and baseline never change. "
            "Register a new version to change them."
        )

    return refusal


def _copy_of_tokenized_refused(tag: str, source: str, name: object) -> str:
    """A version made from another one with its tags: what `MlflowClient.copy_model_version` sends, which copies a
    tokenized version's Hokusai tags too."""
    return (
        f"Tag '{tag}' belongs to Hokusai: it marks the one model a token belongs to, so a copy of a tokenized "
        f"version cannot carry it (MlflowClient.copy_model_version copies every tag). Copy it without tags with "
        f"mlflow.register_model('{source}', '{name}'); a destination model the copy just created is still there, "
        "empty."
    )


def _artifact_location_refused(payload: dict[str, Any]) -> str | None:
    """Refuse choosing where a new experiment's artifacts go.

    MLflow writes a run's uploads under its experiment's `artifact_location`, on the server's own disk when that is a
    plain path: any directory MLflow's OS user can reach. The platform keeps every experiment under its artifact
    store instead.
    """
    # MLflow's parser takes a field under its JSON name too: `artifactLocation` sets the same field.
    if all(payload.get(field) in (None, "") for field in ("artifact_location", "artifactLocation")):
        return None
    return (
        "Only admins may set an experiment's artifact_location: MLflow would store the experiment's artifacts "
        "wherever it points, on the server's own disk too. Leave it out and the platform stores them with everyone "
        "else's, or ask an admin to create the experiment."
    )


def _tag_key(payload: dict[str, Any]) -> list[object]:
    return [payload.get("key")]


def _version_tag_keys(payload: dict[str, Any]) -> list[object]:
    tags = payload.get("tags")
    return [tag.get("key") for tag in tags if isinstance(tag, dict)] if isinstance(tags, list) else []


# A registered model's rename, by the client's REST path or the web UI's: through the gateway, its token claims
# follow it (`gateway._follow_rename`).
RENAME_CALLS = frozenset(rest_and_ajax("/2.0/mlflow/registered-models/rename"))
# Calls whose body a non-admin may not send as it is when its check finds a reason (a 403; MLflow never sees it).
GUARDED_CALLS: dict[str, Refusal] = {
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/experiments/create"), _artifact_location_refused),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/registered-models/create"), _baseline_name_refused("name")),
    **dict.fromkeys(RENAME_CALLS, _baseline_name_refused("new_name")),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/set-tag"), _hokusai_tags_refused(_tag_key)),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/delete-tag"), _hokusai_tags_refused(_tag_key)),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/create"), _hokusai_tags_refused(_version_tag_keys)),
}


def stamp_owner(payload: dict[str, Any], owner: str) -> None:
    """Record `owner` as the creator of a new run, as `user_id` and in the `mlflow.user` tag the client sent.

    MLflow keeps whatever a client claims in both (the stock client sends the local OS user), and its web UI shows
    the tag as the run's user.
    """
    payload["user_id"] = owner
    owner_in_tag_list(payload, owner)


def owner_in_tag_list(payload: dict[str, Any], owner: str, *, add: bool = False) -> bool:
    """`owner` as the value of the `mlflow.user` tag in the body's list of tags where the client sent one (a run's,
    whose record is its `user_id`), or in any case (`add`: a logged model's, which has no other record of its
    creator); whether that changed the body. A `tags` that is not a list is left for MLflow's handler to refuse."""
    tags = payload.get("tags")
    if tags is None and add:
        tags = payload["tags"] = []
    if not isinstance(tags, list):
        return False
    named = [tag for tag in tags if isinstance(tag, dict) and tag.get("key") == MLFLOW_USER_TAG]
    if not named and add:
        tags.append({"key": MLFLOW_USER_TAG, "value": owner})
        return True
    changed = False
    for tag in named:
        if tag.get("value") != owner:
            tag["value"] = owner
            changed = True
    return changed


def owner_in_dataset_tags(payload: dict[str, Any], owner: str) -> bool:
    """`owner` as a new dataset's `mlflow.user` tag, sent or not: MLflow records that tag as the dataset's
    `created_by`. Its tags come as a JSON object in a string; one that is not is left for MLflow's handler to refuse.
    Whether that changed the body."""
    sent = payload.get("tags")
    if sent is not None and not isinstance(sent, str):
        return False
    try:
        tags = json.loads(sent) if sent else None
    except ValueError:
        return False
    except RecursionError:  # MLflow's handler fails on it too, with a 500
        raise _too_deep() from None
    if tags is None:  # no tags, or the JSON `null`
        tags = {}
    if not isinstance(tags, dict) or tags.get(MLFLOW_USER_TAG) == owner:
        return False
    tags[MLFLOW_USER_TAG] = owner
    payload["tags"] = json.dumps(tags)
    return True


async def guarded_body(request: Request, refusal: Refusal) -> bytes:
    """The body of a guarded call (see `GUARDED_CALLS`), unless its check refuses it."""
    body = await read_limited(request, REWRITTEN_BODY_LIMIT)
    payload = json_object(body)
    reason = refusal(payload) if payload is not None else None
    if reason is not None:
        raise ApiError(403, reason, error_code=ErrorCode.PERMISSION_DENIED)
    return body


def rewritten_body(payload: dict[str, Any]) -> bytes:
    """A body changed on its way to MLflow, written back as JSON. A number past a float's range was read as infinity
    and would be written as `Infinity`, another value to MLflow (an experiment id of 1e999999 became a 403 where
    MLflow answers 400): refused instead, as MLflow refuses it."""
    try:
        return json.dumps(payload, allow_nan=False).encode()
    except ValueError:
        raise ApiError(
            400,
            "The request body holds a number out of range (or NaN or Infinity), which MLflow's calls do not take; "
            "nothing was sent.",
            error_code=ErrorCode.INVALID_PARAMETER_VALUE,
        ) from None


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as MLflow's handlers read it; None when that is not a JSON object, and MLflow answers it as without
    the gateway.

    MLflow decodes a body that is a JSON string once more (`_get_normalized_request_json`, for legacy clients that
    double-encode): `"{\"name\": …}"` is an object to MLflow, so the checks and rewrites here must read it as one.
    """
    try:
        payload = json.loads(body)
        if isinstance(payload, str):
            payload = json.loads(payload)
    except ValueError:
        return None
    except RecursionError:  # thousands of nested brackets: no MLflow call is shaped so, and MLflow's parser fails too
        raise _too_deep() from None
    return payload if isinstance(payload, dict) else None


def _too_deep() -> ApiError:
    return ApiError(400, _TOO_DEEP, error_code=ErrorCode.INVALID_PARAMETER_VALUE)


async def read_limited(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                f"Request body larger than {limit} bytes for this endpoint.",
                error_code=ErrorCode.INVALID_PARAMETER_VALUE,
            )
    request.scope[BODY_READ] = True
    return b"".join(chunks)  # one copy (none for a body that came in one piece), where a bytearray made two
