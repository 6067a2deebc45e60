"""The real `dvc repro` on small synthetic data in a temp git repo: outputs, no-op reruns,
determinism, param-scoped reruns, metrics diff, rollback. (Experiments:
test_experiments.py.)"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CHAMPION_JSON, HISTORY_JSONL, REPO_ROOT
from tests.helpers import ALL, BIN, dvc, make_repo, ran_stages, set_param, sh

pytestmark = pytest.mark.slow
STAGES_AFTER_TRAIN = ["train", "evaluate", "drift", "promote"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("repo"), n_users=800, n_months=3)
    first = dvc(repo, "repro")
    assert ran_stages(first) == ALL
    assert "has no artifacts at artifact path" not in first.stdout + first.stderr
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "first run")
    return repo


def test_first_run_writes_every_output_and_an_mlflow_run(repo):
    for path in ("data/raw/manifest.json", "data/prepared/train.parquet",
                 "data/prepared/online_features.parquet", "data/prepared/reference.parquet",
                 "models/model.skops", "models/feature_contract.json",
                 "reports/plots/roc.json", "reports/plots/confusion.csv", "reports/drift.json",
                 "reports/drift.html", "reports/promotion.json", CHAMPION_JSON,
                 HISTORY_JSONL):  # fmt: skip
        assert (repo / path).is_file(), path
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    evaluation = json.loads((repo / "reports/evaluation.json").read_text())
    assert metrics["roc_auc"] > 0.8 and evaluation["n_test"] == 160
    assert (repo / "mlflow" / "mlflow.db").is_file()
    assert "path: mlflow" not in (repo / "dvc.lock").read_text()  # never a DVC out


def test_dvc_metrics_show_prints_test_cv_and_next_month_numbers(repo):
    """The headline keys only (issue 10's ece, CV and oot.* made 120 columns impossible:
    their names alone are ~130 characters); the rest is in reports/evaluation.json."""
    shown = dvc(repo, "metrics", "show").stdout
    for key in ("roc_auc", "ece", "roc_auc_cv_mean", "roc_auc_cv_std", "oot.roc_auc",
                "oot.pr_auc", "oot.ece", "oot.as_of", "expected_value_per_user"):  # fmt: skip
        assert key in shown, (key, shown)
    assert "drift" not in shown and "n_test" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 200, shown
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["oot"]["as_of"] == "2024-02-29"  # the month after as_of has labels
    evaluation = json.loads((repo / "reports/evaluation.json").read_text())
    assert 0 < metrics["roc_auc_cv_std"] < 0.1
    assert metrics["ece"] <= max(0.05, 2 * evaluation["ece_noise_floor"]), evaluation
    dvc(repo, "plots", "show")  # writes dvc_plots/: git-ignored, the tree stays clean
    assert (repo / "dvc_plots" / "index.html").is_file()
    assert sh(repo, "git", "status", "--porcelain").stdout == ""


def test_score_writes_the_call_list_of_the_newest_month(repo):
    """`churn score --top N --csv`: the N users most likely to churn, best first."""
    scoring = json.loads((repo / "reports/scoring.json").read_text())
    assert scoring["as_of"] == "2024-03-31" and scoring["users"] == 800
    assert 0 < scoring["expected_churners"] < 800 and "expected_value_of_campaign" in scoring
    scored = pd.read_parquet(repo / "data/scored/2024-03-31.parquet")
    assert list(scored.columns) == [
        "user_id", "churn_probability", "churn", "control", "expected_value", "rank", "decile",
        "reason_1", "reason_2", "reason_3",
    ]  # fmt: skip
    # the control group: a seeded share of the users over the threshold, never called
    over = scored[scored["churn"]]
    assert not scored.loc[~scored["churn"], "control"].any()
    assert 0 < over["control"].sum() < 0.25 * len(over)
    assert scoring["control"] == over["control"].sum()
    assert scoring["contacted"] == len(over) - scoring["control"]
    assert scored["reason_1"].str.contains(" → (?:raises|lowers) risk$").all()
    assert scored["rank"].tolist() == list(range(1, 801))
    assert scored["churn_probability"].is_monotonic_decreasing
    assert set(scored["decile"]) == set(range(1, 11))
    shown = sh(repo, str(BIN / "churn"), "score", "--top", "50", "--csv").stdout
    calls = pd.read_csv(io.StringIO(shown))
    called = scored[~scored["control"]]
    assert calls["user_id"].tolist() == called["user_id"].head(50).tolist()
    assert "control" not in calls.columns
    assert sh(repo, "git", "status", "--porcelain").stdout == ""  # same bytes again


def test_outputs_hold_no_absolute_paths(repo):
    for path in ("data/raw/manifest.json", "data/prepared/features.json",
                 "models/feature_contract.json", "reports/metrics.json", "reports/drift.json",
                 "reports/promotion.json", CHAMPION_JSON, "dvc.lock"):  # fmt: skip
        text = (repo / path).read_text()
        assert str(repo) not in text and "/tmp" not in text, path


def test_noop_repro_runs_nothing(repo):
    before = (repo / "dvc.lock").read_text()
    result = dvc(repo, "repro")
    assert ran_stages(result) == []
    assert "up to date" in result.stdout
    assert (repo / "dvc.lock").read_text() == before


def test_a_failed_stage_does_not_take_serving_down(repo, monkeypatch):
    """DVC deletes a stage's outs before running it; serving reads what promote published
    outside them, so a failed prepare leaves data/prepared/ gone and the API ready."""
    from fastapi.testclient import TestClient

    from churn.serve import Settings, create_app

    set_param(repo, "as_of", "2031-01-31")  # no such snapshot: prepare fails
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "as_of" in failed.stdout + failed.stderr
    assert not (repo / "data/prepared/online_features.parquet").exists()
    monkeypatch.chdir(repo)
    with TestClient(create_app(Settings())) as client:
        assert client.get("/ready").status_code == 200, client.get("/ready").text
        answer = client.post("/predict", json={"user_id": "SF-0000001"})
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    sh(repo, "git", "checkout", "--", "params.yaml")
    dvc(repo, "checkout")
    assert ran_stages(dvc(repo, "repro")) == []


def test_a_new_threshold_for_the_champions_own_model_is_reported_not_served(repo):
    """train.threshold (or a measured save rate) changes the threshold train writes in
    models/feature_contract.json but not the model: promote finds the champion's model
    again, keeps the version's promoted threshold in the stored contract (serving and score
    read it) and says so in promotion.json instead of staying silent. (While the
    workspace's model is still the champion's; the repo is put back afterwards.)"""
    scoring = json.loads((repo / "reports/scoring.json").read_text())
    written = repo / "models/feature_contract.json"
    written.write_text(json.dumps({**json.loads(written.read_text()), "threshold": 0.61}))
    sh(repo, str(BIN / "churn"), "promote")
    report = json.loads((repo / "reports/promotion.json").read_text())
    assert report["threshold_not_served"]["candidate"] == 0.61
    assert report["threshold_not_served"]["served"] == scoring["threshold"] != 0.61
    assert "keeps serving its promoted threshold" in report["threshold_not_served"]["why"]
    # the stored contract, which `churn serve` and `churn score` read, keeps the version's
    # promoted threshold (it used to be overwritten with the candidate's, silently)
    stored = json.loads((repo / CHAMPION_JSON).read_text())["contract_path"]
    assert json.loads((repo / stored).read_text())["threshold"] == scoring["threshold"]
    sh(repo, str(BIN / "churn"), "score")
    assert json.loads((repo / "reports/scoring.json").read_text())["threshold"] == scoring[
        "threshold"]  # fmt: skip
    sh(repo, "git", "checkout", "--", ".")
    dvc(repo, "checkout", "--force")  # the edited contract back from DVC's cache
    assert ran_stages(dvc(repo, "repro")) == []


def test_train_param_reruns_only_train_and_evaluate_and_metrics_diff(repo):
    set_param(repo, "train.hist_gb.max_iter", 20)
    ran = ran_stages(dvc(repo, "repro"))
    # score reruns only when promote changed the champion (reports/served.json)
    assert ran in (STAGES_AFTER_TRAIN, [*STAGES_AFTER_TRAIN, "score"]), ran
    sh(repo, "git", "commit", "-qam", "fewer boosting rounds")
    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    change = diff["reports/metrics.json"]["roc_auc"]
    assert change["old"] != change["new"]
    params_diff = json.loads(dvc(repo, "params", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert params_diff["params.yaml"]["train.hist_gb.max_iter"] == {
        "old": 100,
        "new": 20,
        "diff": -80,
    }


def test_as_of_reruns_prepare_onwards_but_not_ingest(repo):
    set_param(repo, "as_of", "2024-02-29")
    ran = ran_stages(dvc(repo, "repro"))
    # decide reads the newest month from features.json: it reruns, to the same rate
    after = ["prepare", "decide", *STAGES_AFTER_TRAIN]
    assert ran in (after, [*after, "score"]), ran
    contract = json.loads((repo / "models/feature_contract.json").read_text())
    assert contract["as_of"] == "2024-02-29"
    sh(repo, "git", "commit", "-qam", "train on February")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) absent")
def test_dvc_plots_render_offline_in_headless_chromium(repo):
    shutil.copytree(REPO_ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)
    dvc(repo, "config", "plots.html_template", "plots/offline.html")
    dvc(repo, "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page
    dom = sh(
        repo, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={repo / 'chromium-profile'}",
        "--virtual-time-budget=5000", "--dump-dom", (repo / "plots_html" / "index.html").as_uri(),
    ).stdout  # fmt: skip
    # vega-embed replaces each placeholder div with a rendered chart
    assert dom.count('class="vega-embed') >= 5
    for title in ("ROC curve", "Confusion matrix", "Permutation importance"):
        assert title in page


def test_after_a_rollback_the_next_repro_decides_again(repo):
    """promote's decision is a DVC out: a rollback changes it, so `dvc repro` reruns promote
    (which then refuses to promote the model rolled back from)."""
    set_param(repo, "promote.margin", -1.0)  # any candidate passes non-regression
    set_param(repo, "train.hist_gb.max_iter", 30)
    dvc(repo, "repro")
    champion = json.loads((repo / CHAMPION_JSON).read_text())
    assert champion["reason"] == "passed every gate"
    back = sh(repo, str(BIN / "churn"), "rollback", "--reason", "alerts")
    assert "champion is now version" in back.stdout
    assert "promote" in dvc(repo, "status").stdout
    rerun = dvc(repo, "repro")
    assert ran_stages(rerun) == ["promote", "score"]  # the call list follows the rollback
    report = json.loads((repo / "reports/promotion.json").read_text())
    assert report["decision"] == "skip" and "not_rolled_back" in report["failed_gates"]
    scoring = json.loads((repo / "reports/scoring.json").read_text())
    now = json.loads((repo / CHAMPION_JSON).read_text())
    assert scoring["champion"]["sha256"] == now["sha256"] != champion["sha256"]
    assert ran_stages(dvc(repo, "repro")) == []


def test_churn_campaign_measures_called_vs_control_and_feeds_only_decide(repo):
    """`churn campaign` on the scored month (the synthetic source simulates the call list
    being worked with its true offer effect): reports/campaign.json + PNG, the ledger
    campaigns/<lineage>.json; with a fixed save rate the new measurement reruns only the
    decide stage. A contacts file names who was really called; an unknown id is refused
    naming the file and the column."""
    cli = str(BIN / "churn")
    scored = pd.read_parquet(repo / "data/scored/2024-03-31.parquet")
    sh(repo, cli, "campaign")
    report = json.loads((repo / "reports/campaign.json").read_text())
    latest = report["latest"]
    assert latest["as_of"] == "2024-03-31" and latest["true_save_rate"] == 0.25
    assert latest["contacted"] == (scored["churn"] & ~scored["control"]).sum()
    assert latest["control"] == scored["control"].sum() > 0
    assert latest["save_rate_low"] <= latest["save_rate"] <= latest["save_rate_high"]
    assert (repo / "reports/campaign.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ledger = json.loads((repo / "campaigns/streamflow-churn.json").read_text())
    assert [m["as_of"] for m in ledger["measurements"]] == ["2024-03-31"]
    assert ran_stages(dvc(repo, "repro")) == ["decide"]  # the same rate: nothing downstream

    called = scored.loc[scored["churn"] & ~scored["control"], "user_id"].head(20)
    called.to_frame().to_csv(repo / "contacts.csv", index=False)
    sh(repo, cli, "campaign", "--contacts", "contacts.csv", "--no-record")
    mine = json.loads((repo / "reports/campaign.json").read_text())["latest"]
    assert mine["contacts"] == "the contacts file" and mine["contacted"] == 20
    assert "true_save_rate" not in mine  # real contacts: the labels as they are
    (repo / "contacts.csv").write_text("user_id\nSF-0000001\nnobody-42\n")
    refused = sh(repo, cli, "campaign", "--contacts", "contacts.csv", check=False)
    assert refused.returncode == 1
    assert "contacts.csv" in refused.stderr and "user_id" in refused.stderr
    assert "nobody-42" in refused.stderr
    assert json.loads((repo / "campaigns/streamflow-churn.json").read_text()) == ledger
