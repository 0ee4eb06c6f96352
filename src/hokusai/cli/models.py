"""Contains ``hokusai models register | baseline | baselines | list | show``."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from hokusai._registry import LOCAL_ONLY_NOTE, ModelRegistry
from hokusai.cli._api import ApiUrlOption
from hokusai.cli._errors import options_for_fields
from hokusai.cli._output import JsonOption, console, key_value_table, print_json_lines, shown
from hokusai.models import BaselineEntry, TokenizedModel
from hokusai.validation import TAG_METADATA, TAG_METRICS, TAG_REGISTERED_BY

__all__ = ["models_app", "register"]

models_app = typer.Typer(help="Register and inspect tokenized models.", no_args_is_help=True)

_PAIR = "<key=value>"  # what a repeatable KEY=VALUE option takes, in typer's `<type>` style, not `<list[str]>`
_SOURCE_COLUMN_WIDTH = 120  # terminal columns from which `models list` shows each version's source
# A number as every tool writes one: no `_` between digits (Python reads `0.9_0` as 0.9), ASCII digits only. NaN and
# infinities are numbers here, for the baseline rule to refuse in its own words.
_NUMBER_RE = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE
)
# The SDK names what it checks by its own arguments; errors name the option the user typed instead.
_OPTIONS = {
    "model_uri": "--model-uri",
    "model_name": "--name",
    "token_id": "--token-id",
    "metric_name": "--metric",
    "baseline_value": "--baseline",
    "tags": "--tag",
    "model_type": "--type",
    "mlflow_run_id": "--run-id",
    "metadata": "--metadata",
}


def register(app: typer.Typer) -> None:
    """Add the ``models`` group to the root app."""
    app.add_typer(models_app, name="models")


@models_app.command("register")
def register_model(
    model_uri: Annotated[str, typer.Option("--model-uri", help="The model to register, e.g. runs:/<run id>/model.")],
    name: Annotated[str, typer.Option("--name", help="The registered model name.")],
    token_id: Annotated[str, typer.Option("--token-id", help="The token this model is tied to.")],
    metric: Annotated[str, typer.Option("--metric", help="The benchmark metric, e.g. accuracy.")],
    baseline: Annotated[
        Decimal,
        typer.Option(
            "--baseline",
            metavar="NUMBER",
            parser=_exact_number,
            help="The baseline value of the metric.",
        ),
    ],
    tag: Annotated[
        list[str] | None, typer.Option("--tag", metavar=_PAIR, help="A KEY=VALUE tag; repeat for more.")
    ] = None,
    api_url: ApiUrlOption = None,
) -> None:
    """Register a model version tied to a token and a benchmark baseline.

    Example:

    \b
    hokusai models register --model-uri runs:/abc123/model --name churn --token-id CHURN \\
        --metric accuracy --baseline 0.91 --tag team=growth
    """
    tags = _parse_pairs(tag or [], "--tag")
    with options_for_fields(_OPTIONS), ModelRegistry(api_url=api_url) as registry, _fallback_told_once():
        model = registry.register_tokenized_model(model_uri, name, token_id, metric, baseline, tags=tags)
    out = console()
    if model.warnings and model.warnings[0].startswith(LOCAL_ONLY_NOTE):
        outcome = "Registered locally only (not on the platform yet):"
    else:
        outcome = "Registered" if model.created else "Already registered:"
    done = f"{outcome} {model.model_name} version {model.version} for token {model.token_id} ({model.model_uri})."
    out.print(shown(done))
    _print_warnings(model.warnings)


def _print_warnings(messages: Sequence[str]) -> None:
    for warning in messages:
        console(stderr=True).print(shown(f"Warning: {warning}"), style="yellow")


@models_app.command("baseline")
def register_baseline(
    model_type: Annotated[str, typer.Option("--type", help="The model type, e.g. classification (stored lower-case).")],
    run_id: Annotated[str, typer.Option("--run-id", help="The MLflow run whose model is the baseline.")],
    artifact_path: Annotated[
        str, typer.Option("--artifact-path", help="Where the run logged the model: the `name` given to log_model.")
    ] = "model",
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", metavar=_PAIR, help="A KEY=VALUE to record with it; repeat for more."),
    ] = None,
    api_url: ApiUrlOption = None,
) -> None:
    """Register a run's model as the next baseline of a model type (model `hokusai-baseline-<type>`).

    The same run's model again shows the version it became. Example:
    `hokusai models baseline --type classification --run-id abc123 --artifact-path clf --metadata dataset=v1`.
    """
    fields = _parse_pairs(metadata or [], "--metadata")
    with (
        options_for_fields(_OPTIONS | {"artifact_path": "--artifact-path"}),
        ModelRegistry(api_url=api_url) as registry,
    ):
        entry = registry.register_baseline_via_api(model_type, run_id, fields, artifact_path=artifact_path)
    outcome = "Registered" if entry.created else "Already registered:"
    console().print(shown(f"{outcome} baseline {entry.model_name} version {entry.version} ({entry.model_uri})."))
    _print_warnings(entry.warnings)


@models_app.command("baselines")
def list_baselines(
    model_type: Annotated[str | None, typer.Option("--type", help="Only this model type's baselines.")] = None,
    as_json: JsonOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """List the baselines you can see, by type then version. Example: `hokusai models baselines --type clf`."""
    with options_for_fields(_OPTIONS), ModelRegistry(api_url=api_url) as registry:
        baselines = registry.list_baselines(model_type)
    if as_json:
        print_json_lines(_listed(baselines))
        return
    out = console()
    if not baselines:
        out.print("No baselines found.")
        return
    table = Table()
    for column in ("Type", "Version", "Run", "Registered by", "Metrics", "Metadata"):
        table.add_column(column, overflow="fold")
    for entry in baselines:
        tags = entry.tags
        cells = (tags.get(TAG_REGISTERED_BY, ""), tags.get(TAG_METRICS, ""), tags.get(TAG_METADATA, ""))
        table.add_row(*map(shown, (entry.model_type, entry.version, entry.run_id or "", *cells)))
    out.print(table)


@models_app.command("list")
def list_models(
    token_id: Annotated[str | None, typer.Option("--token-id", help="Only the models of this token.")] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Only the models holding your tokens (your account name; admins: any account's)."),
    ] = None,
    as_json: JsonOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """List the tokenized model versions you can see. Example: `hokusai models list --token-id my-token`; for
    scripts, `hokusai models list --owner alice --json | jq -r .token_id`."""
    with options_for_fields(_OPTIONS | {"owner": "--owner"}), ModelRegistry(api_url=api_url) as registry:
        models = registry.list_tokenized_models(token_id, owner=owner)
    if as_json:
        print_json_lines(_listed(models))
        return
    out = console()
    if not models:
        out.print("No tokenized models found.")
        return
    # A source (`models:/m-<32 hex>`, a storage path) is long: beside it an 80-column table folds names mid-word.
    with_source = out.width >= _SOURCE_COLUMN_WIDTH
    table = Table()
    for column in ("Model", "Version", "Token", "Metric", "Baseline", *(["Source"] if with_source else [])):
        table.add_column(column, overflow="fold")  # a name or a token id is only useful whole
    for model in models:
        cells = [model.model_name, model.version, model.token_id, model.metric_name, _exact(model.baseline_value)]
        table.add_row(*map(shown, (*cells, *([model.source] if with_source else []))))
    out.print(table)
    if not with_source:
        out.print("Sources: `hokusai models show NAME VERSION`, or widen the terminal.")


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The registered model name.")],
    version: Annotated[str | None, typer.Argument(help="The version; the latest when omitted.")] = None,
    as_json: JsonOption = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Show one tokenized model version. Example: `hokusai models show churn 3`."""
    with options_for_fields({"model_name": "NAME", "version": "VERSION"}), ModelRegistry(api_url=api_url) as registry:
        model = registry.get_tokenized_model(name, version)
    if as_json:
        print_json_lines(_listed([model]))
        return
    console().print(key_value_table(_rows(model), title=f"{model.model_name} version {model.version}"))


@contextmanager
def _fallback_told_once() -> Iterator[None]:
    """Quiet the SDK's own reports of a local fallback while registering: the command reports it once itself.

    A Python caller gets the fallback as a log line and as a RuntimeWarning, the command from the result's warnings.
    """
    sdk_logger = logging.getLogger("hokusai")
    level = sdk_logger.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sdk_logger.setLevel(logging.ERROR)
            yield
    finally:
        sdk_logger.setLevel(level)


def _rows(model: TokenizedModel) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("token", model.token_id),
        ("metric", model.metric_name),
        ("baseline", _exact(model.baseline_value)),
        ("model uri", model.model_uri),
        ("source", model.source),
        ("run", model.run_id),
    ]
    return rows + [(f"tag {key}", value) for key, value in sorted(model.tags.items())]


def _exact_number(text: str) -> Decimal:
    """`--baseline` as typed, exactly: read as a float, `1e-400` became 0.0 before the baseline rule could see it."""
    if _NUMBER_RE.fullmatch(text) is None:
        raise typer.BadParameter(f"{text!r} is not a number")
    return Decimal(text)


def _parse_pairs(values: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        if key.strip() in pairs:  # one would silently replace the other
            raise typer.BadParameter(f"{key.strip()!r} is given twice; give each key once", param_hint=option)
        pairs[key.strip()] = text
    return pairs


def _exact(value: float) -> str:
    """The shortest text that reads back as the same float: a baseline pasted into `--baseline` must match it
    (`:g` showed 0.9000000001 as 0.9, which a repeat then refused as another baseline)."""
    return repr(float(value))


def _listed(entries: Sequence[TokenizedModel | BaselineEntry]) -> list[dict[str, object]]:
    """Entries as the API lists them: `created` and `warnings` describe a registration call, not a stored version."""
    return [entry.model_dump(mode="json", exclude={"created", "warnings"}) for entry in entries]
