"""Bring your own data, end to end through the CLI: a telecom-style CSV (ids, a Yes/No
label, a row-number column, a surname column, blank numeric strings) in a repo that
already serves the StreamFlow champion. `churn params set` for source, path, id, label
and lineage, `dvc repro`, `churn serve`: the CSV's model is version 1 of its own lineage,
answers for one of its ids, and the StreamFlow lineage is untouched."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import LINEAGE
from tests.helpers import BIN, dvc, env, free_port, make_repo, ran_stages, sh, wait_until_ok

pytestmark = pytest.mark.slow


def telecom_csv(n: int = 1200, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.25, 0.2])
    monthly = rng.uniform(20, 110, n).round(2)
    logit = 0.8 - 0.06 * tenure + 0.02 * (monthly - 60) - 1.5 * (contract != "Month-to-month")
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    total = (tenure * monthly).round(2).astype(str)
    total[tenure == 0] = " "  # blank strings for brand-new customers
    return pd.DataFrame({
        "RowNumber": np.arange(1, n + 1),
        "customerID": 15600000 + np.arange(n),  # integer ids, as many tables have
        "Partner": rng.choice(["Yes", "No"], n),
        "Surname": [f"Name{k}" for k in rng.integers(0, 300, n)],
        "tenure": tenure,
        "Contract": contract,
        "MonthlyCharges": monthly,
        "TotalCharges": total,
        "Churn": np.where(churned, "Yes", "No"),
    })  # fmt: skip


def test_a_csv_of_your_own_becomes_version_1_of_its_lineage_and_is_served(tmp_path):
    (tmp_path / "repo").mkdir()
    repo = make_repo(tmp_path / "repo", n_users=500, n_months=2, model="auto")  # as shipped
    dvc(repo, "repro")  # the StreamFlow lineage, as a clone of this repo has it
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "streamflow")
    streamflow = {p.name: p.read_bytes() for p in (repo / LINEAGE).glob("*.json*")}

    telecom_csv().to_csv(repo / "data" / "external" / "telco.csv", index=False)
    churn = str(BIN / "churn")
    sh(repo, churn, "params", "set", "ingest.source=table", "ingest.path=data/external/telco.csv",
       "ingest.table.id_column=customerID", "ingest.table.label_column=Churn",
       "ingest.table.as_of=2024-01-31", "as_of=2024-01-31",
       "promote.model_name=my-telco")  # fmt: skip
    result = dvc(repo, "repro")
    text = result.stdout + result.stderr
    assert ran_stages(result)[-1] == "score", text
    assert "excluding column 'RowNumber'" in text and "excluding column 'Surname'" in text
    assert "decision.fee_column 'monthly_fee' is not a numeric column" in text
    assert "could be the fee: MonthlyCharges, TotalCharges" in text

    champion = json.loads((repo / "registry/my-telco/champion.json").read_text())
    assert champion["version"] == "1" and champion["model_name"] == "my-telco", champion
    assert champion["reason"] == "first champion"
    assert {p.name: p.read_bytes() for p in (repo / LINEAGE).glob("*.json*")} == streamflow
    # calibrated: the mean predicted churn rate is the observed one (class weighting alone
    # said 40 % where 26.5 % churn); the threshold is the one with the most net value
    evaluation = json.loads((repo / "reports/evaluation.json").read_text())
    assert abs(evaluation["predicted_churn_rate"] - evaluation["label_rate"]) <= 0.03, evaluation
    contract = json.loads((repo / "models/feature_contract.json").read_text())
    training = json.loads((repo / "models/training.json").read_text())
    assert contract["threshold"] == training["threshold"]["value"]
    assert "customer_value" in evaluation["value_of_a_saved_user"]  # no monthly_fee column
    scoring = json.loads((repo / "reports/scoring.json").read_text())
    assert scoring["champion"]["model_name"] == "my-telco"
    # one snapshot: every user's outcome is known (the model trained and was tested on it)
    assert scoring["users"] == 0 and scoring["left_out"]["users"] == 1200
    assert "score.known_outcomes: true" in scoring["left_out"]["reason"]
    assert "left out 1200 users: their outcome is known" in text

    port = free_port()
    log_path = repo / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([churn, "serve", "--port", str(port)], cwd=repo, stdout=log,
                                stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ok(f"{url}/ready", proc, log_path, 90)
            assert httpx.get(f"{url}/model").json()["model_name"] == "my-telco"
            answer = httpx.post(f"{url}/predict", json={"user_id": 15600007})  # as in the CSV
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model_version"] == "1" and 0.0 <= body["churn_probability"] <= 1.0
            assert body["threshold"] == contract["threshold"]
            assert body["churn"] == (body["churn_probability"] >= contract["threshold"])
            features = httpx.get(f"{url}/features/15600007").json()
            assert "Surname" not in features and "RowNumber" not in features
            # a row of the CSV as it is (Yes/No, a blank TotalCharges, numbers as text)
            with open(repo / "data" / "external" / "telco.csv", newline="") as f:
                row = next(r for r in csv.DictReader(f) if r["TotalCharges"].strip() == "")
            by_id = httpx.post(f"{url}/predict", json={"user_id": int(row["customerID"])})
            for left_out in ("customerID", "Churn", "RowNumber", "Surname"):
                row.pop(left_out)
            as_is = httpx.post(f"{url}/predict", json={"features": row})
            assert as_is.status_code == 200, as_is.text
            assert as_is.json()["churn_probability"] == by_id.json()["churn_probability"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
