"""The platform as `make run` brings it up: probes, key-protected routes, and an MLflow that demands credentials."""

from __future__ import annotations

import httpx

from tests.support.platform import LivePlatform


def test_ready_needs_no_key(platform: LivePlatform) -> None:
    response = httpx.get(platform.url + "/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "mlflow": "ok", "identity_mode": "assertion"}


def test_probes_answer_head_as_load_balancers_send_it(platform: LivePlatform) -> None:
    for path in ("/health", "/ready"):
        probed = httpx.head(platform.url + path, timeout=30.0)
        assert (probed.status_code, probed.content) == (200, b""), path
        assert int(probed.headers["content-length"]) > 0  # the GET's, though no body is sent


def test_keys_route_needs_a_valid_key(platform: LivePlatform) -> None:
    with platform.client(platform.admin_key) as client:
        assert client.get("/api/v1/keys").status_code == 200
    with platform.client() as anonymous:
        assert anonymous.get("/api/v1/keys").status_code == 401
    with platform.client("hk_live_" + "x" * 40) as wrong:
        response = wrong.get("/api/v1/keys")
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert response.json()["layer"] == "hokusai-api"


def test_embedded_mlflow_refuses_requests_without_credentials(platform: LivePlatform) -> None:
    response = httpx.post(platform.mlflow_url + "/api/2.0/mlflow/experiments/search", json={"max_results": 1})
    assert response.status_code == 401
    assert httpx.get(platform.mlflow_url + "/version").status_code == 401


def test_a_bare_mount_redirects_to_the_mlflow_ui(platform: LivePlatform) -> None:
    with platform.client() as client:
        bare = client.get("/api/mlflow")
        alias = client.post("/mlflow", params={"x": "1"})
    assert (bare.status_code, bare.headers["location"]) == (307, "/api/mlflow/")
    assert (alias.status_code, alias.headers["location"]) == (307, "/mlflow/?x=1")
    with platform.client(platform.admin_key, follow_redirects=True) as client:
        ui = client.get("/api/mlflow")
    assert ui.status_code == 200 and "<html" in ui.text.lower(), ui.text[:200]


def test_the_web_ui_is_not_offered_the_refused_ai_gateway(platform: LivePlatform) -> None:
    with platform.client(platform.admin_key) as client:
        info = client.get("/api/mlflow/ajax-api/3.0/mlflow/server-info")
    assert info.status_code == 200, info.text
    assert info.json()["features_enabled"] == {"gateway": False}
