"""Reasons add up: base + contributions = the model's score before calibration, for every
estimator kind, on the Pipeline path and on compiled.json; a text never contradicts its sign."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.fastpath import CalibratedScores, compile_pipeline, compiled_sha256, read_compiled
from churn.model import build_pipeline, fit_pipeline
from churn.params import DecisionParams, TrainParams
from churn.reasons import explainer_for, reason_text, source_owner, top_reasons
from churn.score import score_users
from tests.unit.test_fastpath import _compiled_file
from tests.unit.test_model import SPEC, quirky_frame


def fitted(model: str, calibration: str = "sigmoid"):
    frame = quirky_frame(400, seed=3)
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    p = TrainParams(model=model, calibration=calibration, random_forest={"n_estimators": 20})
    pipeline = fit_pipeline(build_pipeline(SPEC, p, 0), x, y)
    return pipeline, compile_pipeline(pipeline, x.head(100)), x


def raw_score(compiled, rows: np.ndarray) -> np.ndarray:
    """What the calibration map reads: the model's log-odds, or a forest's vote share."""
    final = compiled.estimator
    model = final.estimator if isinstance(final, CalibratedScores) else final
    if hasattr(model, "decision_function"):
        return model.decision_function(rows)
    return model.predict_proba(rows)[:, 1]


@pytest.mark.parametrize("calibration", ["sigmoid", "none"])
@pytest.mark.parametrize("model", ["logistic_regression", "hist_gb", "random_forest"])
def test_contributions_add_up_to_the_uncalibrated_score(model, calibration):
    pipeline, compiled, x = fitted(model, calibration)
    rows = pipeline[:-1].transform(x)
    explainer = explainer_for(compiled)
    base, contributions = explainer.contributions(rows)
    assert contributions.shape == (len(x), 4)  # hours, constant, tv, plan: source columns
    np.testing.assert_allclose(base + contributions.sum(axis=1), raw_score(compiled, rows),
                               rtol=0, atol=1e-6)  # fmt: skip
    assert explainer.output == ("probability" if model == "random_forest" else "log-odds")
    assert not contributions[:, 1].any()  # the constant column is dropped: never a reason
    assert np.abs(contributions[:, 0]).max() > 0.01  # hours drives the label


@pytest.mark.parametrize("leaves, missing", [(6, False), (6, True), (9, False)])
def test_tabled_treeshap_of_histogram_boosting_equals_shaps(leaves, missing):
    """The tables are TreeSHAP itself, not an approximation: per row and preprocessed
    column, the same values as shap.TreeExplainer (path dependent, raw output) and the same
    base, on rows the model saw and on new ones (NaN taking each split's missing side)."""
    import shap
    from sklearn.ensemble import HistGradientBoostingClassifier

    from churn.reasons import boosting_tables

    rng = np.random.default_rng(leaves)
    x = rng.normal(size=(3000, 6))
    x[:, 3] = rng.integers(0, 3, 3000)  # a count: repeated splits on one column
    if missing:
        x[rng.random(x.shape) < 0.1] = np.nan
    y = (x[:, 0] + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 3]) + rng.normal(size=3000)) > 0
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=leaves, random_state=0)
    model.fit(x, y)
    tables = boosting_tables(model)
    assert tables is not None and len(tables.trees) == 40
    new = rng.normal(size=(500, 6)) * 2
    if missing:
        new[rng.random(new.shape) < 0.2] = np.nan
    reference = shap.TreeExplainer(model, model_output="raw")
    for rows in (x[:500], new):
        base, parts = tables.decompose(rows)
        expected = reference.shap_values(rows, check_additivity=False)
        np.testing.assert_allclose(parts, expected, rtol=0, atol=1e-9)
        expected_base = float(np.asarray(reference.expected_value).reshape(-1)[0])
        np.testing.assert_allclose(base, expected_base, rtol=0, atol=1e-9)
        np.testing.assert_allclose(base + parts.sum(axis=1), model.decision_function(rows),
                                   rtol=0, atol=1e-9)  # fmt: skip


def test_boosting_with_large_trees_is_left_to_shap():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from churn.reasons import MAX_TABLE_SPLITS, boosting_tables

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    y = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] + rng.normal(size=2000) > 0
    model = HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=MAX_TABLE_SPLITS + 2,
                                           min_samples_leaf=5).fit(x, y)  # fmt: skip
    assert max(int((~p[0].nodes["is_leaf"].astype(bool)).sum()) for p in model._predictors) > 8
    assert boosting_tables(model) is None


def test_one_hot_levels_and_missing_indicators_are_summed_back_to_their_column():
    _, compiled, _ = fitted("logistic_regression")
    owner = source_owner(compiled)
    names = [compiled.features[i] for i in owner]
    # hours's value; tv's value and its missing flag; plan's levels (basic, missing, premium)
    assert names.count("hours") == 1 and names.count("tv") == 2 and names.count("plan") == 3
    assert "constant" not in names


def test_the_linear_reasons_of_compiled_json_equal_the_pipelines(tmp_path):
    pipeline, compiled, x = fitted("logistic_regression")
    _compiled_file(tmp_path, pipeline, x.head(100), sha="b" * 64)
    path = tmp_path / "compiled.json"
    from_file, _, _ = read_compiled(path, "b" * 64, compiled_sha256(path))
    rows = compiled.transform(*compiled.encode(x))
    expected = explainer_for(compiled).contributions(rows)
    got = explainer_for(from_file).contributions(rows)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("model", ["logistic_regression", "hist_gb"])
def test_top_reasons_are_the_largest_and_their_text_follows_the_sign(model):
    pipeline, compiled, x = fitted(model)
    explainer = explainer_for(compiled)
    _, contributions = explainer.contributions(pipeline[:-1].transform(x))
    values = x[list(explainer.columns)].to_numpy(dtype=object).tolist()
    picked = top_reasons(explainer, contributions, values, 3)
    assert len(picked) == len(x)
    for i, reasons in enumerate(picked):
        sizes = [abs(r["contribution"]) for r in reasons]
        assert sizes == sorted(sizes, reverse=True) and 0 not in sizes
        assert sizes[0] == pytest.approx(np.abs(contributions[i]).max(), rel=1e-5)
        for r in reasons:
            assert ("raises risk" in r["text"]) == (r["contribution"] > 0)
            assert ("lowers risk" in r["text"]) == (r["contribution"] < 0)
            assert r["text"].startswith(r["column"] + " ")
    assert all(r["column"] != "constant" for reasons in picked for r in reasons)


def test_reason_text_names_a_missing_value_and_a_category():
    assert reason_text("monthly_fee", 19.99, 0.3) == "monthly_fee 19.99 → raises risk"
    assert reason_text("plan", "premium", -0.2) == "plan premium → lowers risk"
    assert reason_text("tv", float("nan"), 0.1) == "tv missing → raises risk"
    # numbers show four significant digits: one text per shown value, not per row
    assert reason_text("watch_hours_30d", 31.4521, -0.1) == "watch_hours_30d 31.45 → lowers risk"
    assert reason_text("total_paid", 1234.56, 0.1) == "total_paid 1235 → raises risk"
    assert reason_text("tickets", 3, 0.1) == "tickets 3 → raises risk"


def test_the_scored_file_carries_three_reasons_and_the_report_counts_them():
    pipeline, _, x = fitted("hist_gb")
    online = x.assign(user_id=[f"u{i:03d}" for i in range(len(x))])
    contract = {"features": SPEC["features"], "threshold": 0.3}
    scored = score_users(pipeline, contract, online, "user_id", DecisionParams())
    table = scored.table
    assert [c for c in table.columns if c.startswith("reason_")] == [
        "reason_1", "reason_2", "reason_3"]  # fmt: skip
    row = table.iloc[0]
    assert row["reason_1"].split(" ")[0] in ("hours", "tv", "plan")
    counted = scored.report["top_reasons_of_contacted"]
    assert sum(r["users"] for r in counted) == int(table["churn"].sum())
    first = table["reason_1"][table["churn"]].str.extract(r"^(\S+) .*→ (\w+) risk$")
    expected = pd.Series(first[0] + " " + first[1] + " risk").value_counts()
    assert {r["reason"]: r["users"] for r in counted} == expected.to_dict()
    # one pass of preprocessing for scores and reasons: the same probabilities, bit for bit
    plain = score_users(pipeline, contract, online, "user_id", DecisionParams(), reasons=False)
    assert plain.table["churn_probability"].equals(table["churn_probability"])
    assert plain.table["user_id"].equals(table["user_id"])


def test_the_texts_match_each_rows_own_value_and_sign_missing_values_included():
    """Texts are built once per distinct (value, direction) and picked per row: each row
    still reads its own value, "missing" for a null, and the verb of its own sign."""
    from churn.reasons import Explainer, first_reason_names, reason_texts

    frame = pd.DataFrame({"fee": [19.99, np.nan, 19.99, 5.0], "plan": ["a", None, "b", "a"]})
    contributions = np.array([[0.5, 0.1], [-0.4, 0.2], [-0.1, 0.3], [0.0, 0.0]])
    explainer = Explainer(("fee", "plan"), np.array([0, 1]), "linear", "log-odds",
                          lambda r: (r, r), lambda r: r)  # fmt: skip
    _, texts, first = reason_texts(explainer, contributions, frame, 2)
    assert texts[0].tolist() == ["fee 19.99 → raises risk", "fee missing → lowers risk",
                                 "plan b → raises risk", ""]  # fmt: skip
    assert texts[1].tolist() == ["plan a → raises risk", "plan missing → raises risk",
                                 "fee 19.99 → lowers risk", ""]  # fmt: skip
    names = first_reason_names(explainer.columns)
    assert [names[c] if c >= 0 else "" for c in first] == [
        "fee raises risk", "fee lowers risk", "plan raises risk", ""]  # fmt: skip


def test_top_columns_are_a_stable_sort_by_size():
    from churn.reasons import top_columns

    rng = np.random.default_rng(5)
    contributions = np.round(rng.normal(size=(2000, 9)), 1)  # many ties
    expected = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :3]
    assert (top_columns(contributions, 3) == expected).all()
    assert top_columns(contributions[:, :2], 3).shape == (2000, 2)
