"""?explain=true: each score's reasons, on the real app with the histogram-boosting champion
(TreeSHAP through the treelite runtime that serves the score). The logistic-regression
champion of the default lineage is checked over HTTP by the tour (tests/integration)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churn import modelfile, registry
from tests.conftest import CHAMPION_JSON

IDS = ["SF-0000001", "SF-0000002", "SF-0000003", "SF-0000004"]


@pytest.fixture
def pipeline_scores(in_served):
    """The champion Pipeline's own log-odds (before calibration) of the online rows of IDS,
    computed here without the server: what every explanation must add up to."""
    champion = json.loads((in_served / CHAMPION_JSON).read_text())
    pipeline = modelfile.load(registry.verified_artifact(champion))
    online = pd.read_parquet(in_served / "data/prepared/online_features.parquet")
    rows = online.set_index("user_id").loc[IDS].reset_index()
    final = pipeline.named_steps["model"].calibrated_classifiers_[0].estimator
    names = [n for n in pipeline.feature_names_in_]
    log_odds = final.decision_function(pipeline[:-1].transform(rows[names]))
    return dict(zip(IDS, log_odds, strict=True)), rows


def adds_up(explanation: dict, expected: float) -> None:
    listed = sum(r["contribution"] for r in explanation["reasons"])
    assert explanation["output"] == "log-odds"
    assert abs(explanation["base"] + listed + explanation["rest"] - expected) < 1e-6
    assert abs(explanation["score"] - expected) < 1e-6
    for r in explanation["reasons"]:
        assert r["text"].startswith(f"{r['column']} ")
        assert r["text"].endswith("raises risk" if r["contribution"] > 0 else "lowers risk")


def test_by_id_three_reasons_that_add_up_to_the_models_log_odds(client, pipeline_scores):
    expected, rows = pipeline_scores
    plain = client.post("/predict", json={"user_id": IDS[0]}).json()
    assert "explanation" not in plain  # only when asked
    body = client.post("/predict?explain=true", json={"user_id": IDS[0]}).json()
    assert body["churn_probability"] == plain["churn_probability"]
    explanation = body["explanation"]
    assert len(explanation["reasons"]) == 3
    adds_up(explanation, expected[IDS[0]])
    sizes = [abs(r["contribution"]) for r in explanation["reasons"]]
    assert sizes == sorted(sizes, reverse=True)
    first = explanation["reasons"][0]
    value = rows.set_index("user_id").loc[IDS[0], first["column"]]
    assert first["value"] == (None if pd.isna(value) else value)


def test_by_features_and_in_a_batch_the_same_reasons(client, pipeline_scores):
    expected, _ = pipeline_scores
    record = client.get(f"/features/{IDS[1]}").json()
    record.pop("user_id")
    by_id = client.post("/predict?explain=true&top=5", json={"user_id": IDS[1]}).json()
    by_features = client.post("/predict?explain=true&top=5", json={"features": record}).json()
    assert by_features["explanation"] == by_id["explanation"]
    assert len(by_id["explanation"]["reasons"]) == 5
    batch = client.post("/predict/batch?explain=true", json={"user_ids": IDS}).json()
    for one in batch["predictions"]:
        adds_up(one["explanation"], expected[one["user_id"]])
    records = client.post("/predict/batch?explain=true", json={"records": [record]}).json()
    (one,) = records["predictions"]
    assert one["explanation"]["reasons"] == by_id["explanation"]["reasons"][:3]
    assert "explanation" not in client.post("/predict/batch", json={"user_ids": IDS}).json()[
        "predictions"][0]  # fmt: skip


@pytest.mark.parametrize(("query", "field"), [("top=0", "top"), ("top=11", "top"),
                                              ("explain=maybe", "explain")])  # fmt: skip
def test_bad_explain_parameters_are_422_naming_them(client, query, field):
    answer = client.post(f"/predict?explain=true&{query}", json={"user_id": IDS[0]})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", field]


def test_the_reasons_do_not_depend_on_the_runtime(in_served, pipeline_scores):
    """treelite serves the champion's score; the exact sklearn path gives the same reasons."""
    from fastapi.testclient import TestClient

    from churn.serve import create_app
    from tests.api.conftest import settings

    expected, _ = pipeline_scores
    answers = {}
    for runtime in ("auto", "sklearn"):
        with TestClient(create_app(settings(runtime=runtime))) as c:
            assert c.get("/model").json()["runtime"]["name"] == (
                "treelite" if runtime == "auto" else "sklearn")  # fmt: skip
            answers[runtime] = c.post("/predict?explain=true", json={"user_id": IDS[2]}).json()
    assert answers["auto"]["explanation"] == answers["sklearn"]["explanation"]
    adds_up(answers["auto"]["explanation"], expected[IDS[2]])
    assert np.isclose(answers["auto"]["churn_probability"], answers["sklearn"]["churn_probability"])
