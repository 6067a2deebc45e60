"""Columns under the user's control, through the real CLI: drop_columns, automatic
exclusion (row numbers, names, constants), capped high-cardinality categories, and the
leakage guard. Each refusal names the column and the fix, and writes nothing downstream."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import yaml

from churn import modelfile
from churn.fastpath import compile_pipeline
from churn.io import read_json
from churn.serve import validate_record
from tests.conftest import write_course_snapshots
from tests.data.helpers import churn, error_line


def bank_like(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    balance = rng.gamma(2.0, 30000, n).round(2)
    active = rng.integers(0, 2, n)
    logit = -1.5 + 0.04 * (age - 45) - 1.0 * active + rng.normal(0, 1, n)
    exited = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({
        "RowNumber": np.arange(1, n + 1),
        "CustomerId": [f"C{100000 + i}" for i in range(n)],
        "Surname": [f"Surname{k}" for k in rng.integers(0, 400, n)],
        "City": [f"City{k}" for k in rng.integers(0, 60, n)],
        "Country": rng.choice(["France", "Spain", "Germany"], n),
        "Age": age,
        "Balance": balance,
        "IsActiveMember": active,
        "Bank": "StreamBank",
        "Exited": exited,
    })  # fmt: skip


def setup_table(workdir, tmp_path, frame, **extra) -> None:
    source = tmp_path / "bank.csv"
    frame.to_csv(source, index=False)
    table = {"id_column": "CustomerId", "label_column": "Exited", "as_of": "2024-01-31",
             **extra.pop("table", {})}  # fmt: skip
    params = {"ingest": {"source": "table", "path": str(source), "table": table},
              "as_of": "2024-01-31", **extra}  # fmt: skip
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def features(workdir) -> dict:
    return read_json(workdir / "data/raw/manifest.json")["features"]


def test_row_numbers_names_and_constants_are_excluded_with_a_reason_each(tmp_path, workdir):
    setup_table(workdir, tmp_path, bank_like())
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "excluding column" in line]
    assert len(warnings) == 3, result.stderr
    text = "\n".join(warnings)
    assert "'RowNumber': row-number-like" in text
    assert "'Surname': free-text-like (" in text and "distinct values, > 100" in text
    assert "'Bank': constant" in text and "ingest.table.drop_columns" in text
    kept = features(workdir)
    assert {"RowNumber", "Surname", "Bank"}.isdisjoint(kept)
    assert {"City", "Country", "Age", "Balance", "IsActiveMember"} <= set(kept)


def test_drop_columns_leaves_a_column_out_and_an_unknown_one_is_refused(tmp_path, workdir):
    setup_table(workdir, tmp_path, bank_like(), table={"drop_columns": ["Balance"]})
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    assert "leaving out column 'Balance' (ingest.table.drop_columns)" in result.stderr
    assert "Balance" not in features(workdir)

    shutil.rmtree(workdir / "data")
    setup_table(workdir, tmp_path, bank_like(), table={"drop_columns": ["Nope"]})
    message = error_line(churn(workdir, "ingest"))
    assert "'Nope'" in message and "'missing_column'" in message
    assert not (workdir / "data/raw").exists()


def test_snapshot_drop_columns(tmp_path, workdir):
    source = write_course_snapshots(tmp_path / "months", n_users=60)
    base = {"source": "snapshots", "path": str(source),
            "snapshots": {"first_as_of": "2024-01-31", "drop_columns": ["skips_7d"]}}  # fmt: skip
    (workdir / "params.yaml").write_text(yaml.safe_dump({"ingest": base}))
    assert churn(workdir, "ingest").returncode == 0
    assert "skips_7d" not in features(workdir) and "rebuffer_events_7d" in features(workdir)
    shutil.rmtree(workdir / "data")
    base["snapshots"]["drop_columns"] = ["skipz"]
    (workdir / "params.yaml").write_text(yaml.safe_dump({"ingest": base}))
    message = error_line(churn(workdir, "ingest"))
    assert "ingest.snapshots.drop_columns names ['skipz']" in message
    assert not (workdir / "data/raw").exists()


def test_a_high_cardinality_category_is_capped_and_unseen_levels_are_served(tmp_path, workdir):
    setup_table(workdir, tmp_path, bank_like())
    for command in ("ingest", "prepare"):
        assert churn(workdir, command).returncode == 0
    result = churn(workdir, "train", "--no-mlflow")
    assert result.returncode == 0, result.stderr
    assert "'City': 60 levels; the 19 most frequent are kept" in result.stderr
    contract = read_json(workdir / "models/feature_contract.json")
    city = next(f for f in contract["features"] if f["name"] == "City")
    assert city["unseen_levels"] == "infrequent"
    model = modelfile.load(workdir / "models/model.skops")
    online = pd.read_parquet(workdir / "data/prepared/online_features.parquet")
    compiled = compile_pipeline(model, online.head(500))
    assert compiled is not None  # the fast path covers the capped encoder exactly
    record = {k: v for k, v in online.iloc[0].to_dict().items() if k != "user_id"}
    record = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
    clean = validate_record({**record, "City": "Atlantis"}, contract, ["features"])  # no 422
    frame = pd.DataFrame([clean])
    fast = compiled.predict_encoded(*compiled.encode(frame))
    slow = model.predict_proba(frame[list(compiled.features)])[:, 1]
    assert np.allclose(fast, slow, atol=1e-12)


def leaky(frame: pd.DataFrame, flip: float = 0.01, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    noisy = frame["Exited"].to_numpy() ^ (rng.random(len(frame)) < flip)
    return frame.assign(ClosedAccount=np.where(noisy, "yes", "no"))


def test_a_leaking_column_stops_train_naming_it_and_the_fix(tmp_path, workdir):
    setup_table(workdir, tmp_path, leaky(bank_like()))
    for command in ("ingest", "prepare"):
        assert churn(workdir, command).returncode == 0
    result = churn(workdir, "train", "--no-mlflow")
    assert result.returncode == 1
    message = error_line(result)
    assert "'ClosedAccount' (AUC 0.9" in message and "ingest.table.drop_columns" in message
    assert "train.allow_leaky" in message
    assert not (workdir / "models/model.skops").exists()


def test_an_allowed_leak_is_still_caught_by_the_model_auc_check(tmp_path, workdir):
    setup_table(workdir, tmp_path, leaky(bank_like(), flip=0.0),
                train={"allow_leaky": ["ClosedAccount"]})  # fmt: skip
    for command in ("ingest", "prepare", "train"):
        result = churn(workdir, command, *(["--no-mlflow"] if command == "train" else []))
        assert result.returncode == 0, result.stderr
    result = churn(workdir, "evaluate", "--no-mlflow")
    assert result.returncode == 1
    assert "too good to be true" in error_line(result)
    assert not (workdir / "reports/metrics.json").exists()
