"""engine: dask on a real dask cluster (a LocalCluster of two worker processes, joined
through CHURN_DASK_SCHEDULER as a remote cluster is): ingest validates partition by
partition and writes id-range parts, and the result equals the local engine's: the same
raw values and types, the same prepared bytes. The whole-table rules hold across
partitions (a null rate summed over parts, an id in two parts, tables that disagree on
their users), and a refused snapshot leaves data/raw as it was."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn import drift, evaluate, ingest, modelfile, prepare, promote, score, train
from churn import engine as dask_engine
from churn.engine import SCHEDULER_ENV
from churn.errors import DataValidationError
from churn.schema import COURSE_TABLES, ID
from tests.conftest import small_params, write_course_snapshots

pytestmark = pytest.mark.slow

COUNT = next(c.name for t in COURSE_TABLES for c in t.columns
             if c.kind == "count" and c.max_null_rate is None)  # fmt: skip
COUNT_TABLE = next(t.name for t in COURSE_TABLES if COUNT in t.column_names)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes; the stages join them by address. The workers
    start before the engine configures dask, as a cluster started elsewhere would."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local:  # fmt: skip
        before = os.environ.get(SCHEDULER_ENV)
        os.environ[SCHEDULER_ENV] = local.scheduler_address
        try:
            yield local
        finally:
            if before is None:
                os.environ.pop(SCHEDULER_ENV)
            else:
                os.environ[SCHEDULER_ENV] = before


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def raw_table(root: Path, as_of: str, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(root / "data/raw" / as_of / f"{name}.parquet")
    return frame.sort_values(ID, ignore_index=True)


def run_both(tmp_path: Path, monkeypatch, **overrides) -> dict[str, Path]:
    """ingest + prepare with each engine, each in its own folder."""
    roots = {}
    for engine in ("local", "dask"):
        root = tmp_path / engine
        root.mkdir()
        monkeypatch.chdir(root)
        p = small_params(engine=engine, **overrides)
        ingest.run(p)
        prepare.run(p)
        roots[engine] = root
    return roots


DEFAULT = {"ingest.synthetic.n_users": 7043, "ingest.synthetic.n_months": 6,
           "dask.partition_rows": 2000}  # fmt: skip
# the later stages on pieces of 500 rows (12 of the training split, 3 of the test split),
# and every seeded sample drawn (CV, fit, permutation importance, drift)
LATER = {
    **DEFAULT,
    "dask.partition_rows": 500,
    "train.cv_max_rows": 2000,
    "train.fit_max_rows": 3000,
    "evaluate.importance_rows": 1000,
    "drift.max_rows": 3000,
}


@pytest.fixture(scope="module")
def default_roots(cluster, tmp_path_factory) -> dict[str, Path]:
    """The default source (7043 users, six months) through ingest and prepare with each
    engine, in four id ranges per table on dask."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_both(tmp_path_factory.mktemp("default"), monkeypatch, **DEFAULT)


def test_default_data_gives_the_same_raw_values_and_prepared_bytes(default_roots):
    local, dask = default_roots["local"], default_roots["dask"]
    parts = sorted(p.name for p in (dask / "data/raw/2024-01-31/users.parquet").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]
    assert (local / "data/raw/manifest.json").read_text() == (
        dask / "data/raw/manifest.json"
    ).read_text()
    for as_of in ("2024-01-31", "2024-06-30"):
        for t in COURSE_TABLES:
            pd.testing.assert_frame_equal(raw_table(dask, as_of, t.name),
                                          raw_table(local, as_of, t.name))  # fmt: skip
    assert digests(dask / "data/prepared") == digests(local / "data/prepared")


@pytest.fixture(scope="module")
def later_roots(default_roots) -> dict[str, Path]:
    """default_roots after train, evaluate, drift and promote (a dry run) with each engine."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for engine in ("local", "dask"):
            monkeypatch.chdir(default_roots[engine])
            p = small_params(engine=engine, **LATER)
            train.run(p, track=False)
            evaluate.run(p, track=False)
            drift.run(p)
            promote.run(p, dry_run=True)
    return default_roots


def test_train_evaluate_drift_and_promote_equal_the_local_engine(later_roots):
    """train (samples and contract from the pieces), evaluate (scored on the workers),
    drift (samples gathered) and promote's report: the same bytes on both engines."""
    local, dask = later_roots["local"], later_roots["dask"]
    assert digests(dask / "models") == digests(local / "models")
    assert json.loads((local / "models/training.json").read_text())["fit_rows"] == 3000
    assert digests(dask / "reports") == digests(local / "reports")
    assert (local / "reports/drift.json").exists() and (local / "reports/promotion.json").exists()


def test_scores_and_gate_data_equal_the_local_engine(later_roots, tmp_path):
    """score's file and report, and promote's GateData with a champion that scores too
    (the candidate's model on other columns' order), from the workers and from here."""
    root = later_roots["local"]
    prepared = root / "data/prepared"
    model = modelfile.load(root / "models/model.skops")
    contract = json.loads((root / "models/feature_contract.json").read_text())
    spec = json.loads((prepared / "features.json").read_text())
    names = [f["name"] for f in contract["features"]]
    online = prepared / "online_features.parquet"
    p = small_params(engine="dask", **LATER)
    labels = prepared / "online_labels.parquet"  # the newest month's outcomes
    assert len(pd.read_parquet(labels)) == 7043
    with dask_engine.client(p.dask) as client:
        for given, drop in ((None, False), (labels, False), (labels, True)):
            for path in tmp_path.glob("*.parquet"):
                path.unlink()
            here = score._score_here(online, tmp_path / "here.parquet", model, contract, spec,
                                     p, given, drop)  # fmt: skip
            there = dask_engine.score_file(client, online, tmp_path / "there.parquet", model,
                                           contract, spec, p, given, drop)  # fmt: skip
            assert there == here
            if drop:  # every user of the month is labelled: nobody left to score
                assert here is None and not list(tmp_path.glob("*.parquet"))
                continue
            assert here is not None and ("labels" in here[0]) == (given is not None)
            assert digests_of(tmp_path / "there.parquet") == digests_of(tmp_path / "here.parquet")
        for name in ("test.parquet", "oot.parquet"):
            args = (prepared / name, spec["label"], model, names, model, names[::-1])
            local_data = promote.gate_data_of_file(None, *args, 500)
            dask_data = promote.gate_data_of_file(client, *args, 500)
            for field in ("y", "candidate", "champion"):
                np.testing.assert_array_equal(getattr(dask_data, field),
                                              getattr(local_data, field))  # fmt: skip
            assert dask_data.columns == local_data.columns and len(dask_data.batch) == 1000


def digests_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partitioned_snapshots(root: Path, n_users: int = 80) -> Path:
    """Course snapshots whose tables are folders of two parquet parts (text cells)."""
    source = write_course_snapshots(root / "csv", n_users=n_users)
    out = root / "parts"
    for month in sorted(source.iterdir()):
        for csv in month.iterdir():
            frame = pd.read_csv(csv, dtype=str)
            folder = out / month.name / f"{csv.stem}.parquet"
            folder.mkdir(parents=True)
            half = len(frame) // 2
            frame.iloc[:half].to_parquet(folder / "part-0.parquet", index=False)
            frame.iloc[half:].to_parquet(folder / "part-1.parquet", index=False)
    return out


def edit_part(path: Path, edit) -> None:
    edit(pd.read_parquet(path)).to_parquet(path, index=False)


def blank_first(column: str, n: int):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[: n - 1, column] = None
        return frame

    return edit


def snapshot_params(source: Path, engine: str, **overrides):
    return small_params(engine=engine, **{"ingest.source": "snapshots",
                                          "ingest.path": str(source),
                                          "ingest.snapshots.first_as_of": "2024-01-31",
                                          "dask.partition_rows": 30, **overrides})  # fmt: skip


def test_a_null_rate_is_judged_on_the_whole_column(cluster, tmp_path, monkeypatch):
    """Missing counts only in part 1 of one month: 15 of 40 rows there (38 %), 15 of 80 in
    the column (19 %). Under a 20 % limit both engines pass and type the column float in
    every part; under 10 % both refuse with the same message."""
    source = partitioned_snapshots(tmp_path)
    part = source / "month_000" / f"{COUNT_TABLE}.parquet" / "part-1.parquet"
    edit_part(part, blank_first(COUNT, 15))
    raws = {}
    for engine in ("local", "dask"):
        (tmp_path / engine).mkdir()
        monkeypatch.chdir(tmp_path / engine)
        ingest.run(snapshot_params(source, engine, **{"ingest.max_null_rate": 0.2}))
        raws[engine] = raw_table(tmp_path / engine, "2024-01-31", COUNT_TABLE)
    assert raws["dask"][COUNT].dtype == "float64" and raws["dask"][COUNT].isna().sum() == 15
    pd.testing.assert_frame_equal(raws["dask"], raws["local"])
    messages = {}
    for engine in ("local", "dask"):
        monkeypatch.chdir(tmp_path / engine)
        before = digests(tmp_path / engine / "data")
        with pytest.raises(DataValidationError) as refused:
            ingest.run(snapshot_params(source, engine, **{"ingest.max_null_rate": 0.1}))
        messages[engine] = str(refused.value)
        assert digests(tmp_path / engine / "data") == before  # nothing half-written
    assert refused.value.rule == "max_null_rate" and refused.value.column == COUNT
    assert "18.8% of values are missing" in messages["dask"]
    assert messages["dask"] == messages["local"]


@pytest.mark.parametrize("fault", ["same id in two parts", "a user missing from one table"])
def test_whole_table_id_rules_hold_across_parts(fault, cluster, tmp_path, monkeypatch):
    source = partitioned_snapshots(tmp_path)
    month = source / "month_001"
    if fault == "same id in two parts":  # part 0's first user again at the end of part 1
        first = pd.read_parquet(month / "usage_agg_30d.parquet" / "part-0.parquet").iloc[:1]
        edit_part(month / "usage_agg_30d.parquet" / "part-1.parquet",
                  lambda f: pd.concat([f, first], ignore_index=True))  # fmt: skip
        rule = "unique_id"
    else:
        edit_part(month / "support_agg_90d.parquet" / "part-1.parquet", lambda f: f.iloc[:-1])
        rule = "same_ids"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataValidationError) as refused:
        ingest.run(snapshot_params(source, "dask"))
    assert refused.value.rule == rule and refused.value.column == ID
    assert str(month) in refused.value.file
    assert not (tmp_path / "data/raw").exists()  # nothing half-written
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".raw")]


def test_parts_in_id_order_are_cut_without_a_shuffle_into_the_same_bytes(
    cluster, tmp_path, caplog, monkeypatch
):
    """Parts already in id order (as partitioned_snapshots writes them) are only cut at the
    range points, and write the bytes dask's shuffle writes from the same parts; the same
    rows shuffled within and across parts go through the shuffle, to the same values."""
    source = partitioned_snapshots(tmp_path)
    shuffled = tmp_path / "shuffled-source"
    rng = np.random.default_rng(5)
    for folder in sorted(source.glob("*/*.parquet")):
        rows = pd.concat([pd.read_parquet(p) for p in sorted(folder.iterdir())], ignore_index=True)
        rows = rows.iloc[rng.permutation(len(rows))]
        out = shuffled / folder.relative_to(source)
        out.mkdir(parents=True)
        half = len(rows) // 2
        rows.iloc[:half].to_parquet(out / "part-0.parquet", index=False)
        rows.iloc[half:].to_parquet(out / "part-1.parquet", index=False)
    cut = {}
    for name, folder, force_shuffle in (("ordered", source, False),
                                        ("ordered, shuffle forced", source, True),
                                        ("shuffled", shuffled, False)):  # fmt: skip
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        with monkeypatch.context() as patched, caplog.at_level("INFO", logger="churn.engine"):
            if force_shuffle:
                patched.setattr(dask_engine, "_id_order_bounds", lambda per_partition: None)
            caplog.clear()
            ingest.run(snapshot_params(folder, "dask"))
        cut[name] = sum("no shuffle" in r.getMessage() for r in caplog.records)
    assert cut == {"ordered": 2 * len(COURSE_TABLES), "ordered, shuffle forced": 0,
                   "shuffled": 0}  # 2 months x 6 tables  # fmt: skip
    ordered = digests(tmp_path / "ordered" / "data/raw")
    assert len(ordered) > 2 * len(COURSE_TABLES)  # parts of id ranges
    assert digests(tmp_path / "ordered, shuffle forced" / "data/raw") == ordered
    for as_of in ("2024-01-31", "2024-02-29"):
        for t in COURSE_TABLES:
            values = [raw_table(tmp_path / n, as_of, t.name) for n in ("shuffled", "ordered")]
            pd.testing.assert_frame_equal(*values)


def test_a_failed_task_lets_the_others_finish_before_the_stage_cleans_up(cluster, tmp_path):
    """ingest's parts are written by the workers: when one range is refused, the ranges
    still being written must land before the stage removes its staging folder, or a late
    part recreates it (a `.raw.*` folder was left behind once in the suite)."""
    from distributed import Client

    late = tmp_path / "late-part"

    def refuse() -> None:
        raise DataValidationError("f", ID, "unique_id", "2 rows share an id")

    def write_late(path: str) -> int:
        import time

        time.sleep(2)
        Path(path).write_text("part")
        return 1

    with Client(cluster.scheduler_address) as client:
        futures = [client.submit(write_late, str(late), pure=False),
                   client.submit(refuse, pure=False)]  # fmt: skip
        with pytest.raises(DataValidationError):
            dask_engine._gather_all(client, futures)
        assert late.exists()


def test_a_refusal_on_a_local_cluster_prints_no_worker_traceback(capfd, monkeypatch):
    """The workers of a LocalCluster write to the stage's stderr: a refused table is the
    client's one error, not first a worker's "Compute Failed" traceback of it and then the
    cancelled tasks of the closing cluster (the workers' own logs stay quiet of both)."""
    from churn.params import DaskParams

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)  # our own cluster, not the module's

    def refuse(i: int) -> None:
        import time

        if i == 0:
            raise DataValidationError("users.csv", ID, "unique_id", "2 rows share an id")
        time.sleep(2)  # still running when the cluster closes

    with (
        pytest.raises(DataValidationError, match=r"users\.csv: column 'user_id' breaks rule"),
        dask_engine.client(DaskParams(workers=2)) as cluster,
    ):
        cluster.gather(cluster.map(refuse, range(3), pure=False))
    err = capfd.readouterr().err
    assert "distributed.worker" not in err, err
    assert "Compute Failed" not in err and "CancelledError" not in err, err
