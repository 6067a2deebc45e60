"""Contract tests on the real app (TestClient): every route and every error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from churn.errors import ChurnError
from churn.serve import Settings, create_app
from tests.api.conftest import TOKEN, settings
from tests.conftest import CHAMPION_JSON


@pytest.fixture
def record(client):
    features = client.get("/features/SF-0000001").json()
    features.pop("user_id")
    return features


def test_health_ready_and_model(client, in_served):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model_version": "1"}
    model = client.get("/model").json()
    champion = json.loads((in_served / CHAMPION_JSON).read_text())
    assert model["version"] == "1" and model["sha256"] == champion["sha256"]
    assert model["run_id"] == champion["run_id"] and model["metrics"]["roc_auc"] > 0.8
    assert model["as_of"] == "2024-01-31" and model["online_as_of"] == "2024-02-29"
    assert "git_commit" in model and len(model["features"]) == 20
    # histogram boosting runs on treelite once it matched the Pipeline at load
    runtime = model["runtime"]
    assert runtime["name"] == "treelite" and runtime["fallback_reason"] is None
    assert runtime["checked_rows"] > 0 and runtime["max_abs_diff"] <= 1e-9


def test_a_forced_runtime_that_cannot_run_the_model_serves_the_exact_path(in_served, caplog):
    with TestClient(create_app(settings(runtime="onnx"))) as c:
        runtime = c.get("/model").json()["runtime"]
        assert runtime["name"] == "sklearn" and runtime["wanted"] == "onnx"
        assert "skl2onnx cannot convert" in runtime["fallback_reason"]
        assert c.post("/predict", json={"user_id": "SF-0000001"}).status_code == 200
    assert "runtime sklearn (exact path); onnx: skl2onnx cannot convert" in caplog.text
    with pytest.raises(ChurnError, match="CHURN_RUNTIME='gpu'"):
        settings(runtime="gpu")


def test_predict_by_user_id_and_by_features_agree(client, record):
    by_id = client.post("/predict", json={"user_id": "SF-0000001"})
    assert by_id.status_code == 200
    body = by_id.json()
    assert 0 <= body["churn_probability"] <= 1 and body["model_version"] == "1"
    assert body["churn"] == (body["churn_probability"] >= body["threshold"])
    assert body["request_id"] == by_id.headers["x-request-id"]
    by_features = client.post("/predict", json={"features": record}).json()
    assert by_features["churn_probability"] == body["churn_probability"]


def test_request_id_is_echoed(client):
    response = client.post("/predict", json={"user_id": "SF-0000001"},
                           headers={"x-request-id": "abc-123"})  # fmt: skip
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


def test_unknown_user_is_404_with_missing_features(client):
    response = client.post("/predict", json={"user_id": "nobody"})
    assert response.status_code == 404
    assert "monthly_fee" in response.json()["missing_features"]
    assert client.get("/features/nobody").status_code == 404


def bad(client, record, **changes):
    features = {**record, **changes}
    for key, value in changes.items():
        if value is ...:
            features.pop(key)
    response = client.post("/predict", json={"features": features})
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]


def test_feature_errors_name_the_field(client, record):
    assert bad(client, record, monthly_fee=...)["loc"][-1] == "monthly_fee"
    assert bad(client, record, monthly_fee="cheap")["type"] == "type"
    assert bad(client, record, contract_type="Lifetime")["type"] == "category"
    err = bad(client, record, surprise=1)
    assert err["loc"][-1] == "surprise" and err["type"] == "unknown"
    assert bad(client, record, months_active=10_000)["type"] == "range"
    assert bad(client, record, user_is_senior="maybe")["loc"][-1] == "user_is_senior"
    assert bad(client, record, watch_hours_30d=None)["type"] == "not_null"


BOOLS = ("user_is_senior", "has_family", "has_dependents", "plan_stream_tv",
         "plan_stream_movies", "paperless_billing")  # fmt: skip


def test_a_csv_row_posted_as_is_is_read_as_ingest_reads_it(client, record):
    """The words of a CSV row: yes/no and Yes/No for booleans, numbers as text with spaces,
    a blank where training saw nulls, a category with spaces around it; read with ingest's
    own parsers (churn.validate.read_cell), so the score is the typed record's."""
    typed = client.post("/predict", json={"features": record}).json()["churn_probability"]
    words = {}
    for k, (name, value) in enumerate(record.items()):
        if value is None:
            words[name] = ""  # a blank cell
        elif name in BOOLS:
            words[name] = (("No", "Yes"), ("false", "TRUE"), ("0", "1"))[k % 3][int(value)]
        else:
            words[name] = f" {value} "  # text around a number or a category level
    answer = client.post("/predict", json={"features": words})
    assert answer.status_code == 200, answer.text
    assert answer.json()["churn_probability"] == typed
    blank = client.post("/predict", json={"features": {**record, "plan_stream_tv": " "}})
    assert blank.status_code == 200  # nullable in training: a blank is a missing value
    assert bad(client, record, watch_hours_30d="")["type"] == "not_null"
    assert bad(client, record, has_family="maybe")["msg"].startswith("expected yes/no")
    assert bad(client, record, monthly_fee="12,5")["msg"] == "expected a number, got '12,5'"


def test_an_integer_user_id_is_the_id_ingest_stored_as_text(client):
    unknown = client.post("/predict", json={"user_id": 15634602})
    assert unknown.status_code == 404  # looked up as "15634602", not refused as a type
    assert "'15634602'" in unknown.json()["detail"]
    batch = client.post("/predict/batch", json={"user_ids": [15634602, "SF-0000001"]}).json()
    assert batch["unknown_user_ids"] == ["15634602"] and len(batch["predictions"]) == 1
    assert client.post("/predict", json={"user_id": True}).status_code == 422


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client, record, literal):
    text = json.dumps({"features": {**record, "monthly_fee": 1.5}})
    text = text.replace('"monthly_fee": 1.5', f'"monthly_fee": {literal}')
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "monthly_fee"


def test_nullable_feature_may_be_null(client, record):
    response = client.post("/predict", json={"features": {**record, "plan_stream_tv": None}})
    assert response.status_code == 200


@pytest.mark.parametrize("body", [{}, {"user_id": "SF-0000001", "features": {}}, {"uid": "x"}])
def test_malformed_requests_are_422(client, body):
    assert client.post("/predict", json=body).status_code == 422


def test_batch_by_ids_and_records(client, record):
    body = client.post("/predict/batch", json={"user_ids": ["SF-0000001", "SF-0000002", "x"]})
    data = body.json()
    assert [p["user_id"] for p in data["predictions"]] == ["SF-0000001", "SF-0000002"]
    assert data["unknown_user_ids"] == ["x"]
    single = client.post("/predict", json={"user_id": "SF-0000002"}).json()
    assert data["predictions"][1]["churn_probability"] == single["churn_probability"]
    records = client.post("/predict/batch", json={"records": [record, record]}).json()
    assert len(records["predictions"]) == 2
    broken = client.post("/predict/batch", json={"records": [record, {**record, "x": 1}]})
    assert broken.status_code == 422 and broken.json()["detail"][0]["loc"][:3] == [
        "body", "records", 1]  # fmt: skip


def test_batch_and_body_limits_are_413(in_served):
    with TestClient(create_app(settings(max_batch=5, max_body_bytes=2000))) as c:
        assert c.post("/predict/batch", json={"user_ids": ["a"] * 6}).status_code == 413
        assert c.post("/predict/batch", json={"user_ids": ["a"] * 5}).status_code == 200
        huge = {"user_ids": ["SF-0000001" * 10] * 30}
        assert c.post("/predict/batch", json=huge).status_code == 413


def test_metrics_count_requests_scores_and_versions(client):
    client.post("/predict", json={"user_id": "SF-0000001"})
    client.post("/predict", json={"user_id": "nobody"})
    text = client.get("/metrics").text
    assert 'churn_http_requests_total{route="/predict",status="200"}' in text
    assert 'churn_http_requests_total{route="/predict",status="404"}' in text
    assert "churn_http_request_seconds_bucket" in text
    assert 'churn_prediction_score_count{role="champion"}' in text
    assert 'churn_model_info{role="champion",sha256=' in text
    assert 'churn_predictions_total{model_version="1",role="champion"}' in text


def test_reload_is_off_without_a_token_and_needs_the_right_one(in_served):
    with TestClient(create_app(Settings())) as c:
        assert c.post("/admin/reload").status_code == 404
    with TestClient(create_app(settings())) as c:
        assert c.post("/admin/reload").status_code == 401
        bad = {"authorization": "Bearer wrong"}
        assert c.post("/admin/reload", headers=bad).status_code == 401
        ok = c.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["model_version"] == "1"
        assert 'churn_reloads_total{result="ok"} 1.0' in c.get("/metrics").text


def test_what_is_loaded_stays_out_of_the_collectors_walk_and_a_reload_frees_the_old(client):
    """Full collections walked every object MLflow, pandas and the bundle had made, ~140
    ms each, every few seconds under batch load (single p99 with 8 batches running 5.6x
    p50 alone): loading now freezes the heap (gc.freeze), and a reload unfreezes first so
    the old bundle is not kept. (The startup bundle was kept anyway before: the lifespan
    frame held it in a local until shutdown.)"""
    import gc
    import weakref

    try:
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())  # before: 0 frozen
        old = weakref.ref(client.app.state.bundle)
        ok = client.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert client.app.state.bundle is not old()
        assert old() is None
    finally:
        gc.unfreeze()


def test_failed_reload_keeps_serving_the_old_model(tmp_path, in_served, monkeypatch):
    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    with TestClient(create_app(settings(registry_dir=registry_copy))) as c:
        before = c.post("/predict", json={"user_id": "SF-0000001"}).json()
        entry = json.loads((registry_copy / "champion.json").read_text())
        store = Path("mlflow/models") / ("0" * 64)  # the registry names a file by a wrong hash
        store.mkdir(parents=True, exist_ok=True)
        shutil.copy(entry["artifact_path"], store / "model.skops")
        entry.update(sha256="0" * 64, artifact_path=str(store / "model.skops"),
                     contract_path=str(store / "feature_contract.json"))  # fmt: skip
        (registry_copy / "champion.json").write_text(json.dumps(entry))
        failed = c.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert failed.status_code == 409 and "does not match" in failed.json()["detail"]
        after = c.post("/predict", json={"user_id": "SF-0000001"}).json()
        assert after["churn_probability"] == before["churn_probability"]
        assert c.get("/ready").status_code == 200


def test_not_ready_says_why(tmp_path, in_served):
    with TestClient(create_app(settings(registry_dir=tmp_path / "empty"))) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503 and "no champion yet" in ready.json()["reason"]
        assert c.post("/predict", json={"user_id": "SF-0000001"}).status_code == 503


def test_canary_routes_a_stable_fraction_of_users_to_the_challenger(in_served):
    ids = [f"SF-{i:07d}" for i in range(1, 201)]
    with TestClient(create_app(settings(canary_fraction=0.3))) as c:
        assert c.get("/model").json()["challenger"]["version"] == "2"
        roles = {uid: c.post("/predict", json={"user_id": uid}).json()["model_version"]
                 for uid in ids}  # fmt: skip
        again = {uid: c.post("/predict", json={"user_id": uid}).json()["model_version"]
                 for uid in ids[:50]}  # fmt: skip
        text = c.get("/metrics").text
    share = sum(v == "2" for v in roles.values()) / len(roles)
    assert 0.2 < share < 0.4
    assert all(roles[uid] == again[uid] for uid in again)
    assert 'churn_predictions_total{model_version="2",role="challenger"}' in text


def test_shadow_answers_with_the_champion_and_records_the_challenger(in_served):
    with TestClient(create_app(settings(shadow=True))) as c:
        answers = [c.post("/predict", json={"user_id": f"SF-{i:07d}"}).json() for i in range(1, 41)]
        text = c.get("/metrics").text
    assert {a["model_version"] for a in answers} == {"1"}
    assert 'churn_predictions_total{model_version="2",role="shadow"} 40.0' in text
    assert "churn_shadow_score_delta_count 40.0" in text
    agree = [line for line in text.splitlines() if line.startswith("churn_shadow_agreement_total")]
    assert sum(float(line.split()[-1]) for line in agree) == 40


def test_openapi_lists_every_route(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/health", "/ready", "/model", "/features/{user_id}", "/predict", "/predict/batch",
            "/metrics", "/admin/reload"} <= paths  # fmt: skip


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_pages_load_only_the_servers_own_assets(client, page):
    """Swagger UI and ReDoc work offline: every script, style and icon the page loads is
    served by the app itself (FastAPI's defaults name a CDN and Google Fonts)."""
    import re

    html = client.get(page)
    assert html.status_code == 200
    assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html.text), html.text
    assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html.text)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 1000, asset


def test_serving_does_not_import_mlflow(in_served):
    import subprocess
    import sys

    code = (
        "import sys; from fastapi.testclient import TestClient; from churn.serve import "
        "create_app; c = TestClient(create_app()); c.__enter__(); "
        "assert c.get('/ready').status_code == 200; print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path.cwd(), capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


def test_polling_reloads_when_champion_json_changes(tmp_path, in_served):
    import time

    from churn.serve import challenger_entry

    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    with TestClient(create_app(settings(registry_dir=registry_copy, poll_seconds=0.2))) as c:
        assert c.get("/model").json()["version"] == "1"
        champion = json.loads((registry_copy / "champion.json").read_text())
        promoted = {**challenger_entry(settings(registry_dir=registry_copy), champion),
                    "alias": "champion"}  # fmt: skip
        (registry_copy / "champion.json").write_text(json.dumps(promoted))
        deadline = time.monotonic() + 120  # a reload compiles the model: slow on a busy CPU
        while c.get("/model").json()["version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/model").json()["version"] == "2"
        answer = c.post("/predict", json={"user_id": "SF-0000001"}).json()
        assert answer["model_version"] == "2"
