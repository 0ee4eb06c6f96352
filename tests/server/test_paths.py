"""The gateway's path check: a path that could change meaning once MLflow decodes it is invalid (400), one outside
the forwarded families is unknown (404). The live attack corpus sends these through the real gateway."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from hokusai.server.paths import Access, PathInvalid, PathRejected, check_artifact_query, route_path

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts"


@pytest.mark.parametrize(
    "raw",
    [
        ARTIFACTS + "/a%2Fb.txt",  # MLflow would read the encoded '/' as a folder
        ARTIFACTS + "/a%252Fb.txt",  # the file "a%2Fb.txt": MLflow decodes twice and would store it as a/b.txt
        ARTIFACTS + "/bs%5Cx.txt",
        ARTIFACTS + "/%2e%2e/%2e%2e/secret",
        "/api/2.0/mlflow/experiments/../users/list",
        "/api/2.0/mlflow/experiments/search%00",
    ],
)
def test_segments_that_decode_to_separators_or_dot_segments_are_invalid(raw: str) -> None:
    with pytest.raises(PathInvalid, match=r"%2F or %5C"):
        route_path(raw, "PUT")


@pytest.mark.parametrize("raw", ["/api/2.0/mlflow//runs/get", "/api/2.0/mlflow/runs%zz", "/api/2.0/mlflow/a\\b"])
def test_malformed_paths_are_invalid(raw: str) -> None:
    with pytest.raises(PathInvalid, match="malformed"):
        route_path(raw, "GET")


def test_paths_outside_the_families_are_unknown_not_invalid() -> None:
    with pytest.raises(PathRejected) as refused:
        route_path("/api/2.0/preview/mlflow/experiments/search", "GET")
    assert not isinstance(refused.value, PathInvalid)


@pytest.mark.parametrize("name", ["a b.txt", "a%25b.txt", "caf%C3%A9.txt", "a..b.txt", "x%3Fy.txt"])
def test_unusual_but_safe_file_names_are_forwarded_as_sent(name: str) -> None:
    routed = route_path(f"{ARTIFACTS}/{name}", "PUT")
    assert routed.raw == f"{ARTIFACTS}/{name}"
    assert routed.access is Access.WRITE


@pytest.mark.parametrize("name", ["x%23y.txt", "x%2523y.txt"])
def test_a_hash_in_an_artifact_path_is_invalid_as_mlflow_says(name: str) -> None:
    with pytest.raises(PathInvalid, match="Invalid path: MLflow refuses an artifact path that contains '#'"):
        route_path(f"{ARTIFACTS}/{name}", "GET")
    # Elsewhere a '#' is no path of MLflow's own to refuse; the listing's `?path=` is checked like the path.
    routed = route_path("/api/2.0/mlflow-artifacts/artifacts", "GET")
    with pytest.raises(PathInvalid, match="contains '#'"):
        check_artifact_query(routed, QueryParams("path=1/run/artifacts/dir%231"))
    check_artifact_query(routed, QueryParams("path=1/run/artifacts/dir"))


def test_the_web_uis_job_routes_are_forwarded() -> None:
    assert route_path("/ajax-api/3.0/jobs/search", "POST").access is Access.READ
    assert route_path("/ajax-api/3.0/jobs/abc", "GET").access is Access.READ
    assert route_path("/ajax-api/3.0/jobs/cancel/abc", "PATCH").access is Access.WRITE
    with pytest.raises(PathRejected):  # submitting a job: see paths._FAMILIES
        route_path("/ajax-api/3.0/jobs/", "POST")
