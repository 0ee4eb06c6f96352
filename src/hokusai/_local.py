"""Contains the local backend: tokenized models in an MLflow SQLite store, for mock mode and the offline fallback.

It applies the same validation and returns the same shapes as the API, enforces one model per token in a
small SQLite table next to the MLflow store, and never opens a network connection. MLflow is imported on
first use only, because ``import mlflow`` takes about a second.
"""

from __future__ import annotations

import contextlib
import getpass
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hokusai._client import api_error
from hokusai._mlflow_filters import filter_in, versions_carrying
from hokusai._paths import local_store_dir
from hokusai.errors import LAYER_LOCAL, ErrorCode, HokusaiAPIError
from hokusai.models import BaselineEntry, RegistrationRequest, TokenClaim, TokenizedModel
from hokusai.validation import (
    BASELINE_MODELS_FILTER,
    LATEST_VERSION,
    TAG_BASELINE,
    TAG_IS_BASELINE,
    TAG_METADATA,
    TAG_METRIC,
    TAG_MODEL_TYPE,
    TAG_REGISTERED_BY,
    TAG_RUN_ID,
    TAG_TOKEN_ID,
    baseline_check,
    baseline_model_name,
    baseline_model_type,
    baseline_repeat_leaves_out,
    is_baseline_model_name,
    no_tokenized_model,
    parse_models_uri,
    repeat_conflict,
    repeat_leaves_out,
    run_id_from_uri,
    token_already_claimed,
    token_not_claimed,
    token_not_held,
    tokenized_tags,
    validate_version,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["LocalRegistry", "create_local_store", "local_tracking_uri"]

_PAGE_SIZE = 1000


def local_tracking_uri(store_dir: Path | None = None) -> str:
    """The MLflow tracking URI of the local store (``sqlite:///<HOKUSAI_HOME>/mock/mlflow.db``)."""
    return f"sqlite:///{(store_dir or local_store_dir()) / 'mlflow.db'}"


# Often a run on the platform, registered while the API was down: nothing is wrong with it, and the API checks it.
_NOT_IN_STORE = (
    "run '{run_id}' is not in the local MLflow store ({store}), so its metric was not compared with the baseline "
    "here; the API compares it when the registration reaches it (`hokusai sync`)"
)


def create_local_store(store_dir: Path | None = None) -> None:
    """Create the local store's database if it is missing, with the Default experiment's artifacts in
    ``<store>/artifacts``: MLflow would put them in ``./mlruns`` of whichever process created the database, a
    directory that may be gone by the next run."""
    store_dir = store_dir or local_store_dir()
    if (store_dir / "mlflow.db").exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(local_tracking_uri(store_dir), (store_dir / "artifacts").as_uri())


class LocalRegistry:
    """The registry's methods, answered from a local MLflow store in ``store_dir``."""

    def __init__(self, store_dir: Path | None = None) -> None:
        self.store_dir = store_dir or local_store_dir()
        self.tracking_uri = local_tracking_uri(self.store_dir)
        self._claims = _TokenClaims(self.store_dir / "tokens.db")
        self._mlflow: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._mlflow is None:
            from mlflow import MlflowClient

            create_local_store(self.store_dir)
            self._mlflow = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._mlflow

    def register_tokenized_model(self, request: RegistrationRequest, *, notes: tuple[str, ...] = ()) -> TokenizedModel:
        """Register like ``POST /api/v1/models/tokenized``; ``notes`` are prepended to the result's warnings."""
        run_id = self._source_run_id(request.model_uri)
        holder, claimed_now = self._claims.claim(request.token_id, request.model_name, owner=getpass.getuser())
        if holder != request.model_name:
            raise api_error(
                token_already_claimed(request.token_id, holder, yours=True),  # one user's store: every model is theirs
                status=409,
                error_code=ErrorCode.TOKEN_ALREADY_CLAIMED,
                layer=LAYER_LOCAL,
            )
        try:
            return self._register_claimed(request, run_id, notes)
        except Exception:
            if claimed_now:
                # As on the server: a registration that fails leaves the token free (a typo in a model name or a
                # strict check must not hold it for good).
                self._claims.release(request.token_id, request.model_name)
            raise

    def _register_claimed(
        self, request: RegistrationRequest, run_id: str | None, notes: tuple[str, ...]
    ) -> TokenizedModel:
        existing = self._find_version(request)
        if existing is not None:
            conflict = repeat_conflict(
                version_label=f"Model '{request.model_name}' version {existing.version}",
                registered=existing.tags,
                metric_name=request.metric_name,
                baseline_value=request.baseline_value,
            )
            if conflict is not None:
                raise api_error(conflict, status=409, error_code=ErrorCode.REGISTRATION_CONFLICT, layer=LAYER_LOCAL)
            left_out = repeat_leaves_out(
                version_label=f"Model '{request.model_name}' version {existing.version}",
                registered_tags=existing.tags,
                registered_description=existing.description,
                tags=request.tags | request.metadata_tags(),
                description=request.description,
            )
            return _tokenized(existing, created=False, warnings=notes + ((left_out,) if left_out else ()))
        warnings = self._run_warnings(request, run_id)
        tags = tokenized_tags(
            token_id=request.token_id,
            metric_name=request.metric_name,
            baseline_value=request.baseline_value,
            run_id=run_id,
        )
        version = self._create_version(
            request.model_name,
            source=request.model_uri,
            run_id=run_id,
            tags=tags | request.tags | request.metadata_tags(),
            description=request.description,
        )
        return _tokenized(version, created=True, warnings=notes + tuple(warnings))

    def get_tokenized_model(self, model_name: str, version: str | None = None) -> TokenizedModel:
        """One version, as ``GET /api/v1/models/tokenized/<name>/versions/<version>`` answers it.

        No version, or ``latest``, is the newest version that carries a token the model holds.
        """
        number = validate_version(version)
        held = self._claims.held_by(model_name)
        if number is None:
            found = max(
                (
                    found
                    for found in self._search_versions(_model_filter(model_name))
                    if found.tags.get(TAG_TOKEN_ID) in held
                ),
                key=lambda found: int(found.version),
                default=None,
            )
        else:
            with _translated():
                found = self.client.get_model_version(model_name, number)
        if found is None or TAG_TOKEN_ID not in found.tags:
            if not held and not is_baseline_model_name(model_name):
                raise _not_found(no_tokenized_model(model_name))  # as on the server
            raise _not_found(f"Model '{model_name}' has no tokenized version '{version or LATEST_VERSION}'.")
        if found.tags[TAG_TOKEN_ID] not in held:
            # As on the server: the tag alone binds nothing (a version tagged by hand, say, through MlflowClient).
            raise _not_found(token_not_held(model_name, str(found.version), found.tags[TAG_TOKEN_ID]))
        return _tokenized(found, created=False)

    def list_tokenized_models(self, token_id: str | None = None, *, owner: str | None = None) -> list[TokenizedModel]:
        models: list[TokenizedModel] = []
        for claimed_token, model_name in self._claims.rows(token_id=token_id, owner=owner):
            versions = self._search_versions(versions_carrying(model_name, claimed_token))
            models.extend(_tokenized(found, created=False) for found in versions)
        return sorted(models, key=lambda model: (model.model_name, int(model.version)))

    def get_token(self, token_id: str) -> TokenClaim:
        """Who holds a token, as ``GET /api/v1/tokens/<token>`` answers its owner."""
        held = self._claims.get(token_id)
        if held is None:
            raise _not_found(token_not_claimed(token_id))
        model_name, owner, created_at = held
        return TokenClaim(
            token_id=token_id,
            model_name=model_name,
            owner=owner,
            created_at=datetime.fromisoformat(created_at),
            model_carries_token=bool(self._search_versions(versions_carrying(model_name, token_id))),
        )

    def register_baseline(
        self, model_type: str, run_id: str, metadata_json: str | None, *, source: str
    ) -> BaselineEntry:
        """Register a baseline like ``POST /api/v1/models/baseline``: model ``hokusai-baseline-<type>``, where the
        same source again returns the version it became."""
        model_name = baseline_model_name(model_type)
        versions = self._search_versions(_model_filter(model_name))
        existing = next((found for found in versions if found.source == source), None)
        if existing is not None:
            left_out = baseline_repeat_leaves_out(
                version_label=f"Model '{model_name}' version {existing.version}",
                registered_metadata=existing.tags.get(TAG_METADATA),
                metadata_json=metadata_json,
            )
            return _baseline(existing, created=False, warnings=(left_out,) if left_out else ())
        tags = {
            TAG_IS_BASELINE: "true",
            TAG_MODEL_TYPE: model_type,
            TAG_RUN_ID: run_id,
            TAG_REGISTERED_BY: getpass.getuser(),
        }
        if metadata_json is not None:
            tags[TAG_METADATA] = metadata_json
        found = self._create_version(model_name, source=source, run_id=run_id, tags=tags, description=None)
        return _baseline(found, created=True)

    def list_baselines(self, model_type: str | None) -> list[BaselineEntry]:
        """List baselines like ``GET /api/v1/models/baseline``: of one type, or of all, by type then version."""
        names = _model_filter(baseline_model_name(model_type)) if model_type else BASELINE_MODELS_FILTER
        versions = self._search_versions(f"{names} AND tags.`{TAG_IS_BASELINE}` = 'true'")
        baselines = [_baseline(found, created=False) for found in versions]
        return sorted(baselines, key=lambda entry: (entry.model_name, int(entry.version)))

    def whoami(self) -> dict[str, Any]:
        """The local identity: the OS user, with no key and no expiry."""
        return {
            "owner": getpass.getuser(),
            "key_id": None,
            "key_prefix": None,
            "scopes": ["read", "write"],
            "expires_at": None,
        }

    def _create_version(
        self, model_name: str, *, source: str, run_id: str | None, tags: dict[str, str], description: str | None
    ) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        with _translated():
            try:
                self.client.create_registered_model(model_name)
            except MlflowException as exc:
                if exc.error_code != ErrorCode.RESOURCE_ALREADY_EXISTS:
                    raise
            # Tags go in with the version, in one call, so no version is ever visible half-tagged.
            return self.client.create_model_version(
                model_name, source=source, run_id=run_id, tags=tags, description=description
            )

    def _find_version(self, request: RegistrationRequest) -> ModelVersion | None:
        """The version an identical earlier registration created (same token, model and source)."""
        carriers = self._search_versions(versions_carrying(request.model_name, request.token_id))
        return next((found for found in carriers if found.source == request.model_uri), None)

    def _search_versions(self, filter_string: str) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        page_token = None
        with _translated():
            while True:
                page = self.client.search_model_versions(filter_string, max_results=_PAGE_SIZE, page_token=page_token)
                found.extend(page)
                page_token = page.token
                if not page_token:
                    return found

    def _source_run_id(self, model_uri: str) -> str | None:
        """The source's run, as the server finds it: named by `runs:/`, or the run a local logged model came from."""
        run_id = run_id_from_uri(model_uri)
        parsed = parse_models_uri(model_uri)
        if run_id is not None or parsed is None or parsed.model_id is None:
            return run_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_logged_model(parsed.model_id).source_run_id or None
        except MlflowException:
            return None  # not in this store: MLflow's own error follows when the version is created

    def _run_warnings(self, request: RegistrationRequest, run_id: str | None) -> list[str]:
        """The server's run checks, as far as a local store can make them.

        A run missing from this store is only a warning (an error with ``strict``): registrations made while the
        API was down usually point at a run on the platform. The server always answers 404 for a missing run.
        """
        metrics: dict[str, float] = {}
        if run_id is not None:
            from mlflow.exceptions import MlflowException

            with _translated():
                try:
                    metrics = dict(self.client.get_run(run_id).data.metrics)
                except MlflowException as exc:
                    if exc.error_code != ErrorCode.RESOURCE_DOES_NOT_EXIST or request.strict:
                        raise
                    return [_NOT_IN_STORE.format(run_id=run_id, store=self.tracking_uri)]
        return baseline_check(
            run_id=run_id,
            metrics=metrics,
            metric_name=request.metric_name,
            baseline_value=request.baseline_value,
            strict=request.strict,
        )

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return f"{class_name}(store_dir={str(self.store_dir)!r})"


class _TokenClaims:
    """One model per token, enforced by the table's primary key."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self._path)) as connection, connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS tokens ("
                "token_id TEXT PRIMARY KEY, model_name TEXT NOT NULL, owner TEXT NOT NULL, created_at TEXT NOT NULL)"
            )
            yield connection

    def claim(self, token_id: str, model_name: str, *, owner: str) -> tuple[str, bool]:
        """Claim the token for the model unless it is taken: the model holding it now, and whether this claimed it."""
        with self._connect() as connection:
            inserted = connection.execute(
                "INSERT OR IGNORE INTO tokens (token_id, model_name, owner, created_at) VALUES (?, ?, ?, ?)",
                (token_id, model_name, owner, datetime.now(UTC).isoformat()),
            ).rowcount
            (holder,) = connection.execute("SELECT model_name FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return str(holder), inserted == 1

    def release(self, token_id: str, model_name: str) -> None:
        with self._connect() as connection:
            connection.execute("DELETE FROM tokens WHERE token_id = ? AND model_name = ?", (token_id, model_name))

    def get(self, token_id: str) -> tuple[str, str, str] | None:
        """The model holding the token, its owner and when it was claimed (ISO 8601); None when it is free."""
        with self._connect() as connection:
            row = connection.execute(
                "SELECT model_name, owner, created_at FROM tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

    def held_by(self, model_name: str) -> set[str]:
        with self._connect() as connection:
            cursor = connection.execute("SELECT token_id FROM tokens WHERE model_name = ?", (model_name,))
            return {str(token) for (token,) in cursor.fetchall()}

    def rows(self, *, token_id: str | None, owner: str | None) -> list[tuple[str, str]]:
        with self._connect() as connection:
            cursor = connection.execute(
                "SELECT token_id, model_name FROM tokens WHERE (? IS NULL OR token_id = ?) AND (? IS NULL OR owner = ?)"
                " ORDER BY token_id",
                (token_id, token_id, owner, owner),
            )
            return [(str(token), str(model)) for token, model in cursor.fetchall()]


def _not_found(message: str) -> HokusaiAPIError:
    return api_error(message, status=404, error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST, layer=LAYER_LOCAL)


def _model_filter(model_name: str) -> str:
    return f"name IN {filter_in([model_name])}"


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn MLflow's exceptions into the SDK's, with the status MLflow attached to them."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        status = exc.get_http_status_code()
        raise api_error(exc.message, status=status, error_code=exc.error_code, layer=LAYER_LOCAL) from exc


def _baseline(found: ModelVersion, *, created: bool, warnings: tuple[str, ...] = ()) -> BaselineEntry:
    return BaselineEntry(
        model_name=found.name,
        version=str(found.version),
        model_type=found.tags.get(TAG_MODEL_TYPE, baseline_model_type(found.name)),
        run_id=found.tags.get(TAG_RUN_ID),
        model_uri=f"models:/{found.name}/{found.version}",
        tags=dict(found.tags),
        created=created,
        warnings=warnings,
    )


def _tokenized(found: ModelVersion, *, created: bool, warnings: tuple[str, ...] = ()) -> TokenizedModel:
    tags = dict(found.tags)
    return TokenizedModel(
        model_name=found.name,
        version=str(found.version),
        token_id=tags[TAG_TOKEN_ID],
        metric_name=tags[TAG_METRIC],
        baseline_value=float(tags[TAG_BASELINE]),
        run_id=found.run_id or None,
        model_uri=f"models:/{found.name}/{found.version}",
        source=str(found.source),  # MLflow stores a source with every version
        tags=tags,
        warnings=warnings,
        created=created,
    )
