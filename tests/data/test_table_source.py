"""The flat-table source: one CSV/parquet with an id, a label and any features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.io import read_json
from tests.data.helpers import churn, error_line, write_params


def telco_like(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    monthly = rng.uniform(20, 110, n).round(2)
    total = (tenure * monthly).round(2).astype(str)
    total[:3] = " "  # Telco's blank TotalCharges for brand-new customers
    return pd.DataFrame(
        {
            "customerID": [f"{i:04d}-ABCDE" for i in range(n)],
            "gender": rng.choice(["Female", "Male"], n),
            "SeniorCitizen": rng.integers(0, 2, n),
            "Partner": rng.choice(["Yes", "No"], n),
            "tenure": tenure,
            "Contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "notes": [f"free text {i}" for i in range(n)],
            "Churn": rng.choice(["Yes", "No"], n, p=[0.3, 0.7]),
        }
    )


def table_params(workdir, path, **table):
    defaults = {"id_column": "customerID", "label_column": "Churn", "as_of": "2024-01-31"}
    return write_params(workdir, source="table", path=str(path), table={**defaults, **table})


def test_telco_style_csv_is_ingested_with_inferred_types(tmp_path, workdir):
    source = tmp_path / "telco.csv"
    telco_like().to_csv(source, index=False)
    table_params(workdir, source)
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    assert "excluding column 'notes': id- or name-like text" in result.stderr
    manifest = read_json(workdir / "data/raw/manifest.json")
    assert manifest["layout"] == "table" and manifest["snapshots"] == ["2024-01-31"]
    kinds = manifest["features"]
    assert kinds["SeniorCitizen"] == "bool" and kinds["Partner"] == "bool"
    assert kinds["TotalCharges"] == "numeric" and kinds["Contract"] == "category"
    assert "notes" not in kinds and "customerID" not in kinds
    features = pd.read_parquet(workdir / "data/raw/2024-01-31/features.parquet")
    assert features["TotalCharges"].isna().sum() == 3  # blanks became missing
    labels = pd.read_parquet(workdir / "data/raw/2024-01-31/labels.parquet")
    assert labels["churn_label"].dtype == bool
    # the rest of the pipeline runs on it unchanged
    assert churn(workdir, "prepare").returncode == 0
    assert churn(workdir, "train", "--no-mlflow").returncode == 0


def test_configured_positive_label_and_date_column(tmp_path, workdir):
    frame = telco_like(160)
    frame["Churn"] = np.where(frame["Churn"] == "Yes", "Attrited Customer", "Existing Customer")
    frame["snapshot"] = ["2024-01-31"] * 80 + ["2024-02-29"] * 80
    source = tmp_path / "bank.parquet"
    frame.to_parquet(source, index=False)
    table_params(workdir, source, positive_label="Attrited Customer", date_column="snapshot",
                 as_of=None)  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    manifest = read_json(workdir / "data/raw/manifest.json")
    assert manifest["snapshots"] == ["2024-01-31", "2024-02-29"]
    assert manifest["n_users"] == {"2024-01-31": 80, "2024-02-29": 80}
    labels = pd.read_parquet(workdir / "data/raw/2024-02-29/labels.parquet")
    expected = (frame["Churn"].iloc[80:] == "Attrited Customer").to_numpy()
    assert np.array_equal(labels["churn_label"].to_numpy(), expected)


@pytest.mark.parametrize(
    ("values", "positive"), [(["Yes", "No", "Unsure"], None), (["a", "b", "c"], "a")]
)
def test_non_binary_label_is_refused(values, positive, tmp_path, workdir):
    frame = telco_like(30)
    frame["Churn"] = (values * 10)[:30]
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    table_params(workdir, source, positive_label=positive)
    result = churn(workdir, "ingest")
    assert result.returncode != 0
    message = error_line(result)
    assert "'Churn'" in message and "'binary_label'" in message and "t.csv" in message
    assert not (workdir / "data/raw").exists()


def test_missing_id_column_is_refused(tmp_path, workdir):
    source = tmp_path / "t.csv"
    telco_like(30).drop(columns="customerID").to_csv(source, index=False)
    table_params(workdir, source)
    message = error_line(churn(workdir, "ingest"))
    assert "'customerID'" in message and "'missing_column'" in message


def test_real_course_snapshots_ingest_with_a_params_change_only(shared_data, workdir):
    write_params(workdir, source="snapshots", path=str(shared_data),
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    manifest = read_json(workdir / "data/raw/manifest.json")
    assert manifest["snapshots"] == ["2024-01-31", "2024-02-29"]
    assert manifest["n_users"] == {"2024-01-31": 7043, "2024-02-29": 7043}
    subs = pd.read_parquet(workdir / "data/raw/2024-01-31/subscriptions.parquet")
    assert subs["plan_stream_tv"].isna().sum() == 1526  # the documented quirk survives


def refused(workdir, frame, tmp_path, **table) -> str:
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    table_params(workdir, source, **table)
    result = churn(workdir, "ingest")
    assert result.returncode == 1, result.stderr
    assert not (workdir / "data/raw").exists()  # nothing published
    return error_line(result)


@pytest.mark.parametrize(("bad", "rule"), [("abc", "numeric"), ("inf", "dtype"),
                                           ("-inf", "dtype")])  # fmt: skip
def test_one_bad_number_is_a_named_error_not_a_dropped_column(bad, rule, tmp_path, workdir):
    frame = telco_like(60)  # one cell in 60: 1.7 %, over the 1 % allowed
    frame["MonthlyCharges"] = frame["MonthlyCharges"].astype(str)
    frame.loc[7, "MonthlyCharges"] = bad
    message = refused(workdir, frame, tmp_path)
    assert "t.csv" in message and "'MonthlyCharges'" in message and f"'{rule}'" in message
    assert "customerID 0007-ABCDE" in message  # the configured id column and a real id


@pytest.mark.parametrize("levels", [None, [1, 2, 3]])
def test_a_numeric_column_with_15_percent_text_is_refused_not_dropped_or_recast(
    levels, tmp_path, workdir
):
    """15 % "abc" in a numeric column was dropped as id-like text with a warning, or (few
    distinct numbers) silently read as a category; now it is refused, naming the column,
    the share and three ids."""
    frame = telco_like(200)
    if levels is not None:
        frame["MonthlyCharges"] = np.resize(levels, 200)
    frame["MonthlyCharges"] = frame["MonthlyCharges"].astype(str)
    frame.loc[frame.index % 20 < 3, "MonthlyCharges"] = "abc"  # 30 of 200
    message = refused(workdir, frame, tmp_path)
    assert "'MonthlyCharges' breaks rule 'numeric'" in message
    assert "15.0% of its non-blank cells are not numbers (['abc'])" in message
    assert "max_non_numeric_share 1.0%" in message
    assert "customerID 0000-ABCDE, 0001-ABCDE, 0002-ABCDE" in message


def test_a_rare_non_numeric_cell_is_read_as_missing_with_a_warning(tmp_path, workdir):
    frame = telco_like(300)
    frame["MonthlyCharges"] = frame["MonthlyCharges"].astype(str)
    frame.loc[5, "MonthlyCharges"] = "abc"  # 1 of 300: 0.33 % ("n/a" is already missing)
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    table_params(workdir, source)
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    assert "column 'MonthlyCharges': 1 non-numeric cell(s) ['abc'] read as missing" in (
        result.stderr
    )
    kinds = read_json(workdir / "data/raw/manifest.json")["features"]
    assert kinds["MonthlyCharges"] == "numeric"
    features = pd.read_parquet(workdir / "data/raw/2024-01-31/features.parquet")
    assert features["MonthlyCharges"].isna().sum() == 1


def test_course_named_counts_and_money_are_checked_like_snapshots(tmp_path, workdir):
    frame = telco_like(60)
    frame["skips_7d"] = 3
    frame.loc[4, "skips_7d"] = -2
    message = refused(workdir, frame, tmp_path)
    assert "'skips_7d'" in message and "'non_negative'" in message and "0004-ABCDE" in message

    frame["skips_7d"] = "3"
    frame.loc[9, "skips_7d"] = "abc"  # used to pass ingest and fail in prepare, naming nothing
    message = refused(workdir, frame, tmp_path)
    assert "'skips_7d'" in message and "'numeric'" in message and "0009-ABCDE" in message


def test_declared_non_negative_columns(tmp_path, workdir):
    frame = telco_like(60)
    frame.loc[2, "MonthlyCharges"] = -50
    message = refused(workdir, frame, tmp_path, non_negative=["MonthlyCharges"])
    assert "'MonthlyCharges'" in message and "'non_negative'" in message
    message = refused(workdir, telco_like(60), tmp_path, non_negative=["Nope"])
    assert "'Nope'" in message and "'missing_column'" in message


def test_a_column_never_negative_in_the_first_snapshot_is_refused_below_0_later(tmp_path, workdir):
    """tenure is never negative in January: a negative tenure in February is a named error
    (it used to pass as an ordinary number), unless ingest.table.signed lists it."""
    frame = telco_like(160)
    frame["snapshot"] = ["2024-01-31"] * 80 + ["2024-02-29"] * 80
    frame["balance"] = np.linspace(-5, 5, 160)  # negative in January too: stays signed
    frame.loc[100, "tenure"] = -3
    dated = {"date_column": "snapshot", "as_of": None}
    message = refused(workdir, frame, tmp_path, **dated)
    assert "'tenure'" in message and "'non_negative'" in message and "0100-ABCDE" in message
    frame.to_csv(tmp_path / "t.csv", index=False)
    table_params(workdir, tmp_path / "t.csv", signed=["tenure"], **dated)
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    assert "refused below 0 in every one: SeniorCitizen" not in result.stderr
    inferred = result.stderr.split("refused below 0 in every one: ")[1].split(" (")[0]
    assert inferred.split(", ") == ["MonthlyCharges", "TotalCharges"]  # not balance, tenure
    assert read_json(workdir / "data/raw/manifest.json")["features"]["tenure"] == "numeric"


def test_a_positive_label_that_matches_nothing_names_the_parameter(tmp_path, workdir):
    message = refused(workdir, telco_like(60), tmp_path, positive_label="Attrited")
    assert "'Churn'" in message and "'positive_label'" in message
    assert "ingest.table.positive_label 'Attrited'" in message and "'Yes'" in message


@pytest.mark.parametrize(("value", "positive"), [("No", None), ("Yes", "Yes")])
def test_a_one_class_label_is_refused_at_ingest(value, positive, tmp_path, workdir):
    frame = telco_like(60)
    frame["Churn"] = value
    message = refused(workdir, frame, tmp_path, positive_label=positive)
    assert "'Churn'" in message and "'two_classes'" in message
    assert "ingest.table.label_column" in message


def test_duplicate_ids_name_the_configured_id_column(tmp_path, workdir):
    frame = telco_like(60)
    frame.loc[5, "customerID"] = frame.loc[4, "customerID"]
    message = refused(workdir, frame, tmp_path)
    assert "'customerID'" in message and "'unique_id'" in message
    assert "customerID 0004-ABCDE" in message and "user_id" not in message
