import numpy as np
import pytest

from churn.evaluate import compute_metrics, curves, recall_at_top

EXPECTED_KEYS = {
    "roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "recall_at_top_10pct",
    "brier", "log_loss", "n_train", "n_test", "positive_rate",
}  # fmt: skip


def test_recall_at_top_counts_churners_in_the_top_decile():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.linspace(1, 0, 20)  # users 0 and 1 are the top 10 %
    assert recall_at_top(y, scores, 0.1) == pytest.approx(1 / 3)
    assert recall_at_top(np.zeros(5), np.ones(5)) == 0.0


def test_metrics_for_a_perfect_and_a_useless_ranking():
    y = np.array([0, 0, 0, 1, 1])
    perfect = compute_metrics(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9]), 0.5, n_train=20)
    assert set(perfect) >= EXPECTED_KEYS
    assert perfect["roc_auc"] == 1.0 and perfect["f1"] == 1.0 and perfect["accuracy"] == 1.0
    assert perfect["n_train"] == 20 and perfect["n_test"] == 5
    assert perfect["positive_rate"] == 0.4
    flat = compute_metrics(y, np.full(5, 0.5), 0.9, n_train=20)
    assert flat["roc_auc"] == 0.5 and flat["recall"] == 0.0


def test_curves_are_on_fixed_grids():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    out = curves(y, scores)
    assert len(out["roc"]) == 101 and len(out["pr"]) == 101
    tpr = [p["tpr"] for p in out["roc"]]
    assert tpr == sorted(tpr) and tpr[-1] == 1.0
    assert 1 <= len(out["calibration"]) <= 10
