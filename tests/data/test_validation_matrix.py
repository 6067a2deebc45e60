"""Each broken input fails `churn ingest`/`prepare` with one line naming file, column and
rule, a non-zero exit, and no output written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.data.helpers import churn, error_line, write_params


def edit(course_dir: Path, table: str, change) -> Path:
    path = course_dir / "month_000" / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame).to_csv(path, index=False)
    return path


def set_cell(column: str, value: str, rows=(3,)):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[list(rows), column] = value
        return frame

    return change


CASES = {
    "missing column": ("subscriptions", lambda f: f.drop(columns="monthly_fee"),
                       "monthly_fee", "missing_column"),
    "wrong dtype": ("subscriptions", set_cell("months_active", "twelve"),
                    "months_active", "dtype"),
    "negative count": ("usage_agg_30d", set_cell("skips_7d", "-3"), "skips_7d", "non_negative"),
    "negative money": ("subscriptions", set_cell("monthly_fee", "-20.5"),
                       "monthly_fee", "non_negative"),
    "null explosion": ("usage_agg_30d", set_cell("watch_hours_30d", "", rows=range(0, 60, 2)),
                       "watch_hours_30d", "max_null_rate"),
    "unknown category": ("subscriptions", set_cell("contract_type", "Lifetime"),
                         "contract_type", "allowed_categories"),
    "duplicate id": ("users", lambda f: pd.concat([f, f.head(1)]), "user_id", "unique_id"),
    "non-binary label": ("labels", set_cell("churn_label", "maybe"),
                         "churn_label", "binary_label"),
    "ids differ across tables": ("support_agg_90d", set_cell("user_id", "SF-9999999"),
                                 "user_id", "same_ids"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_broken_table_is_refused(case, course_dir, workdir):
    table, change, column, rule = CASES[case]
    bad_file = edit(course_dir, table, change)
    write_params(workdir, source="snapshots", path=str(course_dir),
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode != 0
    message = error_line(result)
    assert f"'{column}'" in message and f"'{rule}'" in message
    assert bad_file.name in message
    assert not (workdir / "data" / "raw").exists()
    assert list((workdir / "data").iterdir()) == []  # no staging leftovers


def test_empty_file_is_refused(course_dir, workdir):
    (course_dir / "month_001" / "payments_agg_90d.csv").write_text("")
    write_params(workdir, source="snapshots", path=str(course_dir),
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode != 0
    message = error_line(result)
    assert "payments_agg_90d.csv" in message and "'empty_file'" in message and "'*'" in message
    assert not (workdir / "data" / "raw").exists()


def test_header_only_file_is_refused(course_dir, workdir):
    edit(course_dir, "labels", lambda f: f.head(0))
    write_params(workdir, source="snapshots", path=str(course_dir),
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    message = error_line(churn(workdir, "ingest"))
    assert "labels.csv" in message and "'empty_file'" in message


def test_missing_snapshot_for_as_of_is_refused_by_prepare(course_dir, workdir):
    write_params(workdir, source="snapshots", path=str(course_dir), as_of="2023-12-31",
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    assert churn(workdir, "ingest").returncode == 0
    result = churn(workdir, "prepare")
    assert result.returncode != 0
    message = error_line(result)
    assert "'as_of'" in message and "'as_of_present'" in message and "2023-12-31" in message
    assert not (workdir / "data" / "prepared").exists()


@pytest.mark.parametrize("bad", ["2024-02-30", "Jan 2024"])
def test_malformed_as_of_is_refused_before_anything_runs(bad, course_dir, workdir):
    write_params(workdir, source="snapshots", path=str(course_dir), as_of=bad,
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode != 0
    message = error_line(result)
    assert "params.yaml" in message and "'as_of'" in message and "'iso_date'" in message
    assert not (workdir / "data").exists()


def test_folders_without_dates_need_first_as_of(course_dir, workdir):
    write_params(workdir, source="snapshots", path=str(course_dir))
    message = error_line(churn(workdir, "ingest"))
    assert "first_as_of" in message


def test_valid_snapshots_are_written_typed(course_dir, workdir):
    write_params(workdir, source="snapshots", path=str(course_dir),
                 snapshots={"first_as_of": "2024-01-31"})  # fmt: skip
    result = churn(workdir, "ingest")
    assert result.returncode == 0, result.stderr
    raw = workdir / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["2024-01-31", "2024-02-29", "manifest.json"]
    subs = pd.read_parquet(raw / "2024-01-31" / "subscriptions.parquet")
    assert subs["months_active"].dtype == "int64"
    assert subs["plan_stream_tv"].isna().any()  # users without internet
