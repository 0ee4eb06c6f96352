"""The values the registry returns (:class:`TokenizedModel`, :class:`BaselineEntry`, :class:`TokenClaim`) and the
request it sends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from hokusai.validation import (
    METADATA_FIELDS,
    METADATA_TAG_PREFIX,
    RegistrationFields,
    validate_metadata_fields,
)

__all__ = ["BaselineEntry", "RegistrationRequest", "TokenClaim", "TokenizedModel"]


class TokenizedModel(BaseModel):
    """A registered model version tied to a token and a benchmark baseline.

    ``model_uri`` addresses the registered version (``models:/<name>/<version>``); ``source`` is the artifact
    location it was registered from (e.g. ``runs:/<run id>/model``).
    """

    # Fields a newer server adds are kept (in `model_extra`, and in `model_dump`): an older SDK keeps working, and
    # `--json` prints the answer as the API sent it.
    model_config = ConfigDict(frozen=True, extra="allow")

    model_name: str
    version: str
    token_id: str
    metric_name: str
    baseline_value: float
    run_id: str | None = None
    model_uri: str
    source: str
    tags: dict[str, str] = {}
    warnings: tuple[str, ...] = ()
    created: bool = False


class BaselineEntry(BaseModel):
    """A baseline model version registered from an MLflow run."""

    model_config = ConfigDict(frozen=True, extra="allow")  # as TokenizedModel's

    model_name: str
    version: str
    model_type: str
    run_id: str | None = None
    model_uri: str
    tags: dict[str, str] = {}
    created: bool = True  # False: this run's model was already a baseline of this type, and that version is returned
    warnings: tuple[str, ...] = ()  # e.g. a repeat's metadata that was not applied


class TokenClaim(BaseModel):
    """Who holds a token: the registered model it belongs to, and since when.

    ``owner`` and ``model_carries_token`` are shown for your own tokens (for any, with an admin key) and are None
    otherwise. ``model_carries_token`` is False once no version of ``model_name`` carries the token (the model was
    deleted, or renamed straight on MLflow): your next registration of the token on another model moves it there.
    """

    model_config = ConfigDict(frozen=True, extra="allow")  # as TokenizedModel's

    token_id: str
    model_name: str
    owner: str | None = None
    created_at: datetime
    model_carries_token: bool | None = None


@dataclass(frozen=True)
class RegistrationRequest:
    """A validated ``register_tokenized_model`` call: the JSON body of ``POST /api/v1/models/tokenized``."""

    model_uri: str
    model_name: str
    token_id: str
    metric_name: str
    baseline_value: float
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    eval_spec: str | None = None
    scorer_ref: str | None = None
    primary_metric: str | None = None
    benchmark_spec_id: str | None = None
    strict: bool = False

    @classmethod
    def of(cls, fields: RegistrationFields, *, strict: bool) -> RegistrationRequest:
        """The request for fields checked by :func:`hokusai.validation.validate_registration`, the server's rules."""
        return cls(
            model_uri=fields.model_uri,
            model_name=fields.model_name,
            token_id=fields.token_id,
            metric_name=fields.metric_name,
            baseline_value=fields.baseline_value,
            tags=fields.tags,
            description=fields.description,
            strict=strict,
            **{name: fields.metadata.get(METADATA_TAG_PREFIX + name) for name in METADATA_FIELDS},
        )

    def metadata_tags(self) -> dict[str, str]:
        return validate_metadata_fields(self.as_json())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
