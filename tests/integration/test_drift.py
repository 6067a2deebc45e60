"""drift on real Evidently: the course months (covariate + concept drift), identical
snapshots, determinism, sampling, and declared column types."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from churn import ingest, synthetic
from churn.drift import column_types, drift_report, is_drifted
from churn.params import DriftParams, parse_params
from churn.prepare import build_features, feature_spec, join_snapshot, split
from churn.schema import COURSE_TABLE_NAMES
from churn.train import fit

pytestmark = pytest.mark.slow


def featurise(tables, files):
    typed = ingest.validate_snapshot(tables, files, 0.05)
    kinds = ingest.feature_kinds(typed)
    return build_features(join_snapshot(typed), kinds), feature_spec(kinds)


def read_month(folder):
    paths = {name: folder / f"{name}.csv" for name in COURSE_TABLE_NAMES}
    raw = {name: ingest.read_table_file(path) for name, path in paths.items()}
    return featurise(raw, {k: str(v) for k, v in paths.items()})


def setup(reference, current, features, as_of="2024-01-31", current_as_of="2024-02-29"):
    spec = {"id": "user_id", "label": "churn_label", "features": features,
            "as_of": as_of, "current_as_of": current_as_of}  # fmt: skip
    params = parse_params({})
    train, test = split(reference, 0.2, 42)
    model = fit(train, spec, params).model
    return model, test, spec


@pytest.fixture(scope="module")
def course(request):
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/streamflow is absent")
    reference, features = read_month(SHARED_DATA / "month_000")
    current, _ = read_month(SHARED_DATA / "month_001")
    model, test, spec = setup(reference, current, features)
    return reference, current, test, model, spec


def test_course_months_flag_rebuffering_and_regenerated_labels(course):
    reference, current, test, model, spec = course
    result = drift_report(reference, current, test, model, spec, DriftParams(), 42)
    s = result.summary
    assert "rebuffer_events_7d" in s["drifted_columns"]
    assert s["columns"]["rebuffer_events_7d"]["type"] == "numerical"
    assert s["columns"]["contract_type"]["drifted"] is False  # subscriptions are unchanged
    target = s["target_drift"]
    assert target["reference_rate"] == pytest.approx(0.2654, abs=1e-3)
    assert target["current_rate"] == pytest.approx(0.2415, abs=1e-3)
    assert 0.3 < target["label_flip_rate"] < 0.45  # ~38 % of labels were regenerated
    assert s["concept_drift"]["drifted"] and s["concept_drift"]["auc_drop"] > 0.2
    assert s["retrain_recommended"] is True
    assert "<html" in result.html.lower() and "cdn.jsdelivr" not in result.html


def test_identical_snapshots_flag_nothing(course):
    reference, _, test, model, spec = course
    s = drift_report(reference, reference.copy(), test, model, spec, DriftParams(), 42).summary
    assert s["drifted_columns"] == [] and s["drift_share"] == 0.0
    assert s["prediction_drift"]["drifted"] is False
    assert s["target_drift"]["label_flip_rate"] == 0.0
    assert s["retrain_recommended"] is False


@pytest.fixture(scope="module")
def synthetic_months():
    params = parse_params({"ingest": {"synthetic": {"n_users": 3000, "n_months": 5}}})
    months = list(synthetic.generate(params.ingest.synthetic))

    def frame(index):
        as_of, tables = months[index]
        return featurise(tables, {n: f"synthetic/{as_of}/{n}" for n in tables})

    reference, features = frame(0)
    model, test, spec = setup(reference, None, features)
    return frame, reference, test, model, spec


def test_injected_synthetic_drift_recommends_retraining(synthetic_months):
    frame, reference, test, model, spec = synthetic_months
    calm = drift_report(reference, frame(1)[0], test, model, spec, DriftParams(), 42).summary
    drifted = drift_report(reference, frame(4)[0], test, model, spec, DriftParams(), 42).summary
    assert not {"rebuffer_events_7d", "watch_hours_30d"} & set(calm["drifted_columns"])
    assert {"rebuffer_events_7d", "watch_hours_30d", "monthly_fee"} <= set(
        drifted["drifted_columns"]
    )
    assert drifted["retrain_recommended"] and drifted["concept_drift"]["drifted"]


def test_reruns_are_identical_and_large_inputs_are_sampled(synthetic_months):
    frame, reference, test, model, spec = synthetic_months
    current = frame(4)[0]
    a = drift_report(reference, current, test, model, spec, DriftParams(), 42)
    b = drift_report(reference, current, test, model, spec, DriftParams(), 42)
    assert a.summary == b.summary and a.html == b.html
    assert a.summary["sampled"] is False
    small = DriftParams(max_rows=1000)
    sampled = drift_report(reference, current, test, model, spec, small, 42).summary
    assert sampled["sampled"] is True and sampled["sample_rows"] == 1000
    assert sampled["n_reference"] == 3000


def test_column_types_are_declared_not_guessed():
    frame = pd.DataFrame(
        {"tickets": [0.0, 1, 2, 0], "hours": [1.5, 2.5, 3.0, 4.0], "skips": np.arange(4.0) * 3,
         "tv": [1.0, 0, np.nan, 1], "plan": ["a", "b", "a", None]}
    )  # fmt: skip
    spec = {"features": [{"name": "tickets", "kind": "numeric"},
                         {"name": "hours", "kind": "numeric"},
                         {"name": "skips", "kind": "numeric"}, {"name": "tv", "kind": "bool"},
                         {"name": "plan", "kind": "category"}]}  # fmt: skip
    types = column_types(frame, spec, count_categories=3)
    assert types == {"tickets": "categorical", "hours": "numerical", "skips": "numerical",
                     "tv": "categorical", "plan": "categorical"}  # fmt: skip


def test_drift_verdict_direction_depends_on_the_method():
    assert is_drifted("K-S p_value", 0.01, 0.05) and not is_drifted("K-S p_value", 0.2, 0.05)
    assert is_drifted("Wasserstein distance (normed)", 0.2, 0.1)
    assert not is_drifted("Jensen-Shannon distance", 0.05, 0.1)


def test_concept_auc_is_scored_on_users_the_model_did_not_train_on(synthetic_months):
    """Same snapshot on both sides: the held-out users give exactly the test AUC (scoring
    every user, training rows included, flattered the model)."""
    _, reference, test, model, spec = synthetic_months
    concept = drift_report(reference, reference.copy(), test, model, spec, DriftParams(),
                           42).summary["concept_drift"]  # fmt: skip
    assert concept["n_current_scored"] == len(test)
    assert concept["auc_current"] == concept["auc_reference_test"]
    assert concept["auc_drop"] == 0.0


def test_the_html_states_the_configured_threshold_and_the_pipelines_verdict(synthetic_months):
    frame, reference, test, model, spec = synthetic_months
    params = DriftParams(threshold=0.3)
    result = drift_report(reference, frame(4)[0], test, model, spec, params, 42)
    page = result.html
    verdict = page[page.index("churn-verdict") : page.index("</section>")]
    assert "Retrain recommended" in verdict and "concept drift" in verdict
    assert "retrain at ≥ 0.3" in verdict and "users not trained on" in verdict
    assert re.search(r"</head>\s*<body[^>]*><section id='churn-verdict'", page)  # first shown
    assert "threshold is 0.3" in page
    assert "threshold is 0.5" not in page  # Evidently's own share test uses drift.threshold


def test_one_snapshot_says_so_and_recommends_nothing(synthetic_months):
    _, reference, test, model, spec = synthetic_months
    one = {**spec, "current_as_of": spec["as_of"]}
    result = drift_report(reference, reference.copy(), test, model, one, DriftParams(), 42)
    assert result.summary["single_snapshot"] is True
    assert result.summary["retrain_recommended"] is False
    assert "Only one snapshot (2024-01-31)" in result.html
