"""The dask engine (params `engine: dask`): the batch work in partitions on a dask cluster,
through the same functions the local engine runs on whole tables.

`CHURN_DASK_SCHEDULER=tcp://host:8786` joins a running cluster (its workers run this
package from the same pins); without it a stage starts a LocalCluster for its own run
(`dask.workers`, `dask.memory_limit`). What a stage writes depends on the data and
`dask.partition_rows`, never on the cluster: its size, a lost worker or the order tasks
finish in.

ingest (course layout: the synthetic source or snapshot folders whose tables are CSV
files or parquet files or folders of parquet parts): every partition is validated by
`validate_table`, except for the null-rate rule, which holds for a whole column: a first
pass sums the missing cells over the partitions and applies `null_rule` once. A second
pass validates again, gives every partition the column types of the whole table (a count
with a missing cell anywhere is float everywhere, as pandas types the whole column), sorts
each table by user id into the same id ranges (dask's shuffle; a table whose partitions
already come in id order, as a lake written by id does, is only cut at the range points:
no shuffle), checks each range for shared ids and `check_same_ids`, and writes range i of
each table as
`data/raw/<as_of>/<table>.parquet/part-<i>.parquet`: the local engine's path as a folder,
which pyarrow, pandas and the later stages read as one table.

prepare: range i of every table is joined on a worker by `join_tables` and `feature_table`
(no shuffle: ingest cut the tables alike). The split is drawn here by `draw_split` from
the gathered labels; the split's rows are shuffled into its order, and every file is
written from the ranges in order through `ParquetStream`: the local engine's bytes.

train, evaluate, drift, promote and score read a prepared file in `pieces` (its row
groups cut at partition_rows) on the workers, the model shipped once to each: what
comes back is a number per row (scores, labels) or a seeded sample (`gather_rows`), never
the table. score's rows are made per piece by the local `user_rows` and shuffled into
rank order, as prepare's splits. Every output is the local engine's bytes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from churn import synthetic
from churn.errors import ChurnError, DataValidationError
from churn.params import DaskParams, IngestParams, Params
from churn.schema import COURSE_TABLES, ID, LABEL, LABEL_TABLE, Table
from churn.validate import all_distinct, check_same_ids, null_rule, offending_ids, validate_table

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

log = logging.getLogger("churn.engine")

SCHEDULER_ENV = "CHURN_DASK_SCHEDULER"
SAMPLE_PER_PARTITION = 1000  # sorted ids each partition offers for the id ranges
PIECE_BATCH = 65_536  # rows decoded at a time when a piece is read out of its row group


def _dask_config() -> None:
    """Text stays numpy object columns, as the local engine reads it (dask would turn it
    into pyarrow strings); set in the environment so LocalCluster's workers inherit it."""
    import dask

    os.environ.setdefault("DASK_DATAFRAME__CONVERT_STRING", "False")
    dask.config.set({"dataframe.convert-string": False})


@contextmanager
def client(p: DaskParams) -> Iterator[Client]:
    """A client of the cluster at CHURN_DASK_SCHEDULER, or of a LocalCluster started for
    this block (one single-threaded worker process per core unless `dask.workers`)."""
    _dask_config()
    from distributed import Client, LocalCluster

    from churn.dask_logs import QuietFailures

    # the cluster's own chatter (workers starting, closing) is not the stage's progress
    logging.getLogger("distributed").setLevel(logging.WARNING)

    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if address:
        log.info("dask: joining the cluster at %s", address)
        with Client(address, timeout="60s") as joined:
            yield joined
            _report_peaks(joined)
        return
    workers = p.workers or os.cpu_count() or 1
    log.info("dask: starting a LocalCluster of %d workers (memory limit %s each)", workers,
             p.memory_limit)  # fmt: skip
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=p.memory_limit,
            dashboard_address=None,
        ) as cluster,  # fmt: skip
        Client(cluster) as local,
    ):
        local.register_plugin(QuietFailures(), name="churn-quiet-failures")
        yield local
        _report_peaks(local)


worker_peaks_mb: dict[str, float] = {}  # the last stage's, for $CHURN_STAGE_LOG (benchmarks)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _report_peaks(cluster: Client) -> None:
    """Log each worker's peak RSS (a worker process's own, since it started)."""
    peaks = {str(name): mb for name, mb in sorted(cluster.run(_peak_rss_mb).items())}
    worker_peaks_mb.clear()
    worker_peaks_mb.update(peaks)
    log.info("dask: peak RSS per worker (MB): %s", ", ".join(f"{mb:.0f}" for mb in peaks.values()))


# --- ingest ---------------------------------------------------------------------------


def _arrow_type(kind: str, missing: bool) -> pa.DataType:
    if kind in ("id", "category", "date"):
        return pa.string()
    if kind in ("bool", "label"):
        return pa.bool_()
    return pa.int64() if kind == "count" and not missing else pa.float64()


def _meta(table: Table, has_missing: dict[str, bool]) -> pd.DataFrame:
    """The empty frame of a typed table: the dtypes `validate_table` gives a whole table."""
    dtypes = {}
    for col in table.columns:
        missing = has_missing[col.name]
        if col.kind in ("bool", "label"):
            dtypes[col.name] = "boolean" if missing else bool
        elif col.kind in ("id", "category", "date"):
            dtypes[col.name] = object
        else:
            dtypes[col.name] = "int64" if col.kind == "count" and not missing else "float64"
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def _partition_stats(frame: pd.DataFrame, table: Table, file: str) -> dict:
    """Pass 1 on one partition: validated without the null-rate rule; its missing cells per
    column (with a few of their ids) and a sorted sample of its ids."""
    if len(frame) == 0:
        return {"rows": 0, "missing": {}, "examples": {}, "sample": [], "ordered": False}
    frame = frame.reset_index(drop=True)
    typed = validate_table(frame, table, file, None)
    missing = typed.isna()
    counts = {name: int(n) for name, n in missing.sum().items()}
    ordered = typed[ID].is_monotonic_increasing and typed[ID].is_unique
    ids = typed[ID] if ordered else typed[ID].sort_values(ignore_index=True)
    step = max(1, len(ids) // SAMPLE_PER_PARTITION)
    return {
        "rows": len(typed),
        "missing": counts,
        "examples": {
            name: offending_ids(frame, missing[name].to_numpy()) for name, n in counts.items() if n
        },
        "sample": [*ids.iloc[::step].tolist(), ids.iloc[-1]],
        "ordered": ordered,  # its ids strictly increase: the sample's ends are its first, last
    }


def _settled(frame: pd.DataFrame, table: Table, file: str, meta: pd.DataFrame) -> pd.DataFrame:
    """Pass 2 on one partition: validated again and given the whole table's dtypes."""
    if len(frame) == 0:
        return meta
    typed = validate_table(frame.reset_index(drop=True), table, file, None)
    return typed.astype(meta.dtypes.to_dict())


def _check_and_write(
    index: int, ranges: dict[str, pd.DataFrame], files: dict[str, str], folder: Path,
    metas: dict[str, pd.DataFrame], schemas: dict[str, pa.Schema],
) -> int:  # fmt: skip
    """One id range of every table: no id twice, the same ids in each table; written as
    part `index` of each table's folder. Returns the rows written per table."""
    frames = {name: part.reset_index() for name, part in ranges.items()}  # user_id first again
    for name, frame in frames.items():
        if not all_distinct(frame[ID]):
            shared = frame[ID].duplicated(keep=False)
            raise DataValidationError(files[name], ID, "unique_id",
                                      f"{int(shared.sum())} rows share an id",
                                      offending_ids(frame, shared))  # fmt: skip
    check_same_ids(frames, files)
    for name, frame in frames.items():  # as the local engine's write_parquet, typed alike
        path = folder / f"{name}.parquet" / f"part-{index:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.astype(metas[name].dtypes.to_dict()).to_parquet(
            path, index=False, engine="pyarrow", compression="snappy", schema=schemas[name]
        )
    return len(frames[LABEL_TABLE])


def _read(path: Path, partition_rows: int) -> dd.DataFrame:
    import dask.dataframe as dd

    try:
        if path.suffix == ".parquet":
            return dd.read_parquet(path)
        # the local engine's read: every cell as text; blocks of about partition_rows rows
        blocksize = max(1 << 16, partition_rows * 200)
        return dd.read_csv(path, dtype=str, skipinitialspace=False, blocksize=blocksize)
    except (OSError, ValueError) as exc:
        raise DataValidationError(str(path), "*", "readable", str(exc).splitlines()[0]) from None


def _source(p: IngestParams, partition_rows: int) -> Iterator[tuple[str, dict, dict[str, str]]]:
    """(as_of, {table: dask frame of its raw cells}, {table: file named in errors})."""
    import dask.dataframe as dd

    from churn.ingest import _table_path, snapshot_folders

    if p.source == "synthetic":
        for as_of, tables in synthetic.generate(p.synthetic):
            files = {name: f"synthetic:{as_of}/{name}" for name in tables}
            parts = max(1, math.ceil(len(tables[LABEL_TABLE]) / partition_rows))
            yield as_of, {name: dd.from_pandas(frame, npartitions=parts, sort=False)
                          for name, frame in tables.items()}, files  # fmt: skip
    elif p.source == "snapshots":
        for as_of, folder in snapshot_folders(Path(p.path), p.snapshots.first_as_of):
            paths = {t.name: _table_path(folder, t.name) for t in COURSE_TABLES}
            yield (
                as_of,
                {name: _read(path, partition_rows) for name, path in paths.items()},
                {name: str(path) for name, path in paths.items()},
            )
    else:
        raise ChurnError("engine: dask reads the course layout (ingest.source synthetic or "
                         "snapshots); ingest.source table runs with engine: local")  # fmt: skip


def _gather_all(cluster: Client, futures: list) -> list:
    """The results; when one task fails, the others are let finish first: a worker still
    writing a part would otherwise recreate the staging folder the stage removes."""
    from distributed import wait

    try:
        return cluster.gather(futures)
    except Exception:
        wait(futures)
        raise


def _id_ranges(stats: dict[str, list[dict]], partition_rows: int) -> tuple[str, ...]:
    """Division points of the id ranges: about partition_rows users each, from the sorted
    samples of every partition (the same data gives the same ranges)."""
    sample = sorted(x for per_table in stats.values() for s in per_table for x in s["sample"])
    rows = sum(s["rows"] for s in stats[LABEL_TABLE])
    count = max(1, math.ceil(rows / partition_rows))
    inner = [sample[len(sample) * k // count] for k in range(1, count)]
    points = sorted({sample[0], *inner, sample[-1]})
    return tuple(points) if len(points) > 1 else (points[0], points[0])  # one user: one range


def _id_order_bounds(per_partition: list[dict]) -> list[str] | None:
    """The partitions' id bounds (dask's divisions of a sorted frame) when every partition's
    ids strictly increase and each partition starts after the one before it ends; None
    when a shuffle is needed."""
    if not all(s["ordered"] for s in per_partition):
        return None
    if any(b["sample"][0] <= a["sample"][-1] for a, b in pairwise(per_partition)):
        return None
    return [*(s["sample"][0] for s in per_partition), per_partition[-1]["sample"][-1]]


def _by_id(typed: dd.DataFrame, per_partition: list[dict], divisions: tuple[str, ...],
           name: str) -> dd.DataFrame:  # fmt: skip
    """The table indexed by user id in the id ranges `divisions`: dask's shuffle, or, for
    partitions already in id order, a cut at the range points."""
    bounds = _id_order_bounds(per_partition)
    if bounds is None:
        return typed.set_index(ID, divisions=list(divisions))
    log.info("dask: %s: partitions already in id order, cut at the range points (no shuffle)",
             name)  # fmt: skip
    # force: a table may lack the first or last user of the others (check_same_ids says so)
    by_id = typed.set_index(ID, sorted=True, divisions=bounds)
    return by_id.repartition(divisions=list(divisions), force=True)


def _global_rules(table: Table, per_partition: list[dict], file: str, null_rate: float) -> dict:
    """The whole-table rules on pass 1's sums; which columns have a missing cell."""
    rows = sum(s["rows"] for s in per_partition)
    if rows == 0:
        raise DataValidationError(file, "*", "empty_file", "the table has no rows")
    has_missing = {}
    for col in table.columns:
        missing = sum(s["missing"].get(col.name, 0) for s in per_partition)
        examples = [x for s in per_partition for x in s["examples"].get(col.name, [])]
        null_rule(file, col, missing / rows, null_rate, lambda e=examples: e[:5])
        has_missing[col.name] = missing > 0
    return has_missing


def ingest_snapshots(
    p: IngestParams, dask_params: DaskParams, out_dir: Path
) -> Iterator[tuple[str, int, dict[str, pd.DataFrame]]]:
    """Validate and write each snapshot of the source under out_dir/<as_of>/ in id-range
    parts; yield (as_of, users, {table: its empty typed frame}) as each is written."""
    import dask
    from dask import delayed

    with client(dask_params) as cluster:
        for as_of, raw, files in _source(p, dask_params.partition_rows):
            tables = [t for t in COURSE_TABLES if t.name in raw]
            delayed_stats = {t.name: [delayed(_partition_stats)(part, t, files[t.name])
                                      for part in raw[t.name].to_delayed()]
                             for t in tables}  # fmt: skip
            stats = dict(zip(delayed_stats, dask.compute(*delayed_stats.values()), strict=True))
            missing = {t.name: _global_rules(t, stats[t.name], files[t.name], p.max_null_rate)
                       for t in tables}  # fmt: skip
            metas = {t.name: _meta(t, missing[t.name]) for t in tables}
            schemas = {t.name: pa.schema([(c.name, _arrow_type(c.kind, missing[t.name][c.name]))
                                          for c in t.columns])
                       for t in tables}  # fmt: skip
            divisions = _id_ranges(stats, dask_params.partition_rows)
            sorted_parts = {}
            for t in tables:
                typed = raw[t.name].map_partitions(_settled, t, files[t.name], metas[t.name],
                                                   meta=metas[t.name])  # fmt: skip
                by_id = _by_id(typed, stats[t.name], divisions, files[t.name])
                sorted_parts[t.name] = by_id.to_delayed()
            ranges = [{name: parts[i] for name, parts in sorted_parts.items()}
                      for i in range(len(divisions) - 1)]  # fmt: skip
            folder = (out_dir / as_of).resolve()  # the workers' cwd is not ours
            writes = [delayed(_check_and_write)(i, one, files, folder, metas, schemas)
                      for i, one in enumerate(ranges)]  # fmt: skip
            users = sum(_gather_all(cluster, cluster.compute(writes)))
            log.info("dask: snapshot %s: %d users in %d id ranges", as_of, users, len(writes))
            yield as_of, users, metas


# --- prepare --------------------------------------------------------------------------


def _id_range_files(folder: Path, names: list[str]) -> list[dict[str, str]]:
    """Part i of every table: the id ranges ingest wrote (a table that is one file, as the
    local engine writes it, is one range)."""
    layouts = {}
    for name in names:
        path = folder / f"{name}.parquet"
        layouts[name] = sorted(path.iterdir()) if path.is_dir() else [path]
    counts = {name: len(files) for name, files in layouts.items()}
    if len(set(counts.values())) != 1:
        raise ChurnError(f"{folder}: the tables are not cut into the same id ranges ({counts} "
                         "parts); rerun ingest (dvc repro)")  # fmt: skip
    return [{name: str(files[i].resolve()) for name, files in layouts.items()}
            for i in range(len(layouts[names[0]]))]  # fmt: skip


def _joined_range(files: dict[str, str], kinds: dict[str, str]) -> pa.Table:
    """One id range of a snapshot, joined and typed by the local engine's functions."""
    import pyarrow.parquet as pq

    from churn.prepare import feature_table, join_tables

    return feature_table(join_tables({n: pq.read_table(f) for n, f in files.items()}), kinds)


def _labels(table: pa.Table) -> np.ndarray:
    return table[LABEL].to_numpy()


def _schema(table: pa.Table) -> pa.Schema:
    return table.schema


def _positioned(table: pa.Table, position: np.ndarray, start: int, stop: int) -> pd.DataFrame:
    """The rows of one part that go into the written file, with their row number there
    (`position[start:stop]`: the part's rows; -1 for a row left out)."""
    positions = position[start:stop]
    keep = positions >= 0
    frame = table.filter(pa.array(keep)).to_pandas(types_mapper=pd.ArrowDtype)
    frame["_position"] = positions[keep]
    return frame


def _stream(cluster: Client, parts: list, files: dict[Path, list[str]], schema: pa.Schema) -> None:
    """Write each file from the parts, in order, through ParquetStream: one part at a time
    in this process, the bytes write_table gives the whole table."""
    from churn.io import ParquetStream

    streams = {path: ParquetStream(path, schema.empty_table().select(cols).schema)
               for path, cols in files.items()}  # fmt: skip
    for future in parts:
        table = future.result()
        if isinstance(table, pd.DataFrame):  # a split's range, with the row numbers as index
            table = pa.Table.from_pandas(table, preserve_index=False).cast(schema)
        for path, cols in files.items():
            streams[path].add(table.select(cols))
        del table, future
    for stream in streams.values():
        stream.close()


def _write_split(
    cluster: Client, parts: list, sizes: list[int], position, rows: int, path: Path,
    schema: pa.Schema, partition_rows: int,
) -> None:  # fmt: skip
    """`rows` rows of the parts written in their order in the file: `position` (shipped
    once to the workers: `ship`) holds each row's number in the file, -1 for a row left
    out, the parts' rows one after the other (`sizes`). A dask shuffle sorts them into
    ranges of partition_rows, and the ranges are written in order: the bytes the local
    engine's write of the whole table gives."""
    import dask.dataframe as dd
    from dask import delayed

    starts = np.cumsum([0, *sizes])
    meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    meta["_position"] = pd.Series(dtype="int64")
    numbered = [delayed(_positioned)(part, position, int(starts[i]), int(starts[i + 1]))
                for i, part in enumerate(parts)]  # fmt: skip
    frame = dd.from_delayed(numbered, meta=meta, verify_meta=False)
    divisions = sorted({*range(0, rows, partition_rows), rows - 1})
    divisions = divisions if len(divisions) > 1 else [0, 0]  # one row
    ordered = frame.set_index("_position", divisions=divisions).to_delayed()
    _stream(cluster, cluster.compute(ordered), {path: schema.names}, schema)


def _split_positions(sizes: list[int], rows: np.ndarray) -> np.ndarray:
    """Each row's number in a split that takes `rows` (row numbers of the snapshot)."""
    position = np.full(sum(sizes), -1, dtype="int64")
    position[rows] = np.arange(len(rows))
    return position


def prepare_snapshot(
    cluster: Client, raw_dir: Path, manifest: dict, as_of: str, wanted: list[str], tmp: Path,
    params: Params,
) -> dict:  # fmt: skip
    """prepare's work on one snapshot on the cluster: each id range joined on a worker, the
    split drawn here from the gathered labels by the local engine's draw_split, every
    file written in the local engine's row order and bytes. Returns what write_roles does."""
    from churn.prepare import draw_split, outputs_of

    folder = raw_dir / as_of
    names = [n for n in manifest["tables"] if (folder / f"{n}.parquet").exists()]
    ranges = _id_range_files(folder, names)
    parts = [cluster.submit(_joined_range, files, manifest["features"], pure=False)
             for files in ranges]  # fmt: skip
    schema = cluster.submit(_schema, parts[0]).result()
    has_labels = LABEL in schema.names
    written: dict = {}
    if "reference" in wanted:
        per_range = cluster.gather([cluster.submit(_labels, part) for part in parts])
        train, test, counts = draw_split(np.concatenate(per_range), params)
        sizes = [len(x) for x in per_range]
        for name, rows in (("train", train), ("test", test)):
            position = ship(cluster, _split_positions(sizes, rows))
            _write_split(cluster, parts, sizes, position, len(rows), tmp / f"{name}.parquet",
                         schema, params.dask.partition_rows)  # fmt: skip
        written.update(counts, empty=schema.empty_table())
    files = {
        tmp / name: cols for name, cols in outputs_of(wanted, has_labels, schema.names).items()
    }
    _stream(cluster, parts, files, schema)
    users = sum(cluster.gather([cluster.submit(len, part) for part in parts]))
    log.info("dask: joined snapshot %s: %d users in %d id ranges (%s)", as_of, users,
             len(ranges), ", ".join(wanted))  # fmt: skip
    return written


# --- the prepared files on the cluster: train, evaluate, drift, promote, score -----------


@contextmanager
def maybe_client(params: Params) -> Iterator[Client | None]:
    """A dask client for engine: dask, else None (the stage runs in this process)."""
    if params.engine != "dask":
        yield None
        return
    with client(params.dask) as cluster:
        yield cluster


def _same(value: object) -> object:
    return value


def ship(cluster: Client, value: object):
    """`value` (a model, a small table) on the cluster as the result of a task that holds
    it, not as scattered data: each worker that needs it fetches it once, and a copy lost
    with a worker is recomputed from the task (scattered data would be gone for good)."""
    return cluster.submit(_same, value, pure=False)


Piece = tuple[int, int, int]  # (row group, first row, end row) of a prepared file


def pieces(path: Path, partition_rows: int) -> list[Piece]:
    """The partitions of the work on a prepared file: its row groups (about a million rows
    each), cut into at most partition_rows rows; in file order. A table with no rows is
    one empty piece."""
    starts = _group_starts(path)
    cut = [(g, lo, min(lo + partition_rows, stop - start))
           for g, (start, stop) in enumerate(pairwise(starts))
           for lo in range(0, stop - start, partition_rows)]  # fmt: skip
    return cut or [(0, 0, 0)]


def _group(path: str, index: int, columns: list[str] | None = None) -> pd.DataFrame:
    """Row group `index` of a parquet file as `pd.read_parquet` gives those rows."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    if file.metadata.num_row_groups == 0:  # an empty table
        empty = file.schema_arrow.empty_table()
        return (empty.select(columns) if columns else empty).to_pandas()
    return file.read_row_group(index, columns=columns).to_pandas()


def _piece(path: str, piece: Piece, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows start..stop of a row group, decoded in batches of which only those rows are
    kept: a piece costs its own rows' memory, not its row group's."""
    import pyarrow.parquet as pq

    group, start, stop = piece
    file = pq.ParquetFile(path)
    if file.metadata.num_row_groups == 0:
        return _group(path, 0, columns)
    kept, seen = [], 0
    for batch in file.iter_batches(batch_size=PIECE_BATCH, row_groups=[group], columns=columns):
        lo, hi = max(start - seen, 0), min(stop - seen, len(batch))
        if lo < hi:
            kept.append(batch.slice(lo, hi - lo))
        seen += len(batch)
        if seen >= stop:
            break
    if not kept:  # a piece past the group's end: none is cut so
        return _group(path, group, columns).iloc[:0]
    table = pa.Table.from_batches(kept).replace_schema_metadata(file.schema_arrow.metadata)
    return table.to_pandas().reset_index(drop=True)


def _group_starts(path: Path) -> np.ndarray:
    """The first row number of each row group, and the row count last."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return np.cumsum([0, *sizes])


def _take(path: str, index: int, rows: np.ndarray, columns: list[str] | None) -> pd.DataFrame:
    """Rows `rows` (numbers within row group `index`) of a parquet file."""
    return _group(path, index, columns).iloc[rows]


def gather_rows(
    cluster: Client | None, path: Path, rows: np.ndarray, columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows `rows` (row numbers of the whole file, in any order) of a prepared file, as
    `pd.read_parquet(path).take(rows)` gives them (indexed by their row numbers): each
    worker reads its row groups and sends only these rows; without a cluster, a row group
    at a time here."""
    starts = _group_starts(path)
    wanted = np.sort(rows)
    group = np.searchsorted(starts, wanted, side="right") - 1
    jobs = [(str(path.resolve()), int(g), wanted[group == g] - starts[g], columns)
            for g in np.unique(group)]  # fmt: skip
    if not jobs:
        return _group(str(path), 0, columns).iloc[:0]
    if cluster is None:
        parts = [_take(*job) for job in jobs]
    else:
        parts = cluster.gather([cluster.submit(_take, *job, pure=False) for job in jobs])
    frame = pd.concat(parts)
    frame.index = pd.Index(wanted)
    return frame.loc[rows]


def _scores(path: str, piece: Piece, models: list, names: list[list[str]]) -> list[np.ndarray]:
    from churn.model import churn_scores

    frame = _piece(path, piece)
    return [churn_scores(model, frame, cols) for model, cols in zip(models, names, strict=True)]


def file_scores(
    cluster: Client, path: Path, models: list, names: list[list[str]], partition_rows: int
) -> list[np.ndarray]:
    """Each model's `churn_scores` of every row of a prepared file, in file order: a piece
    per task, the models shipped once to each worker (`ship`)."""
    shipped = ship(cluster, models)
    tasks = [cluster.submit(_scores, str(path.resolve()), piece, shipped, names, pure=False)
             for piece in pieces(path, partition_rows)]  # fmt: skip
    per_group = cluster.gather(tasks)
    return [np.concatenate([g[k] for g in per_group]) for k in range(len(models))]


def _user_rows(path: str, labels_path: str | None, piece: Piece, model, contract: dict,
               spec: dict, params: Params, drop_labelled: bool):  # fmt: skip
    """One piece's `score.user_rows`; its labels (when the month has them) are the same
    piece of online_labels.parquet, which prepare writes from the same rows."""
    from churn.decision import control_draw
    from churn.score import user_rows

    online = _piece(path, piece)
    labels = None
    if labels_path is not None:
        known = _piece(labels_path, piece, [spec["id"], spec["label"]])
        if not known[spec["id"]].equals(online[spec["id"]]):
            raise ChurnError(f"{labels_path}: its rows are not the online table's; rerun "
                             "prepare (dvc repro)")  # fmt: skip
        labels = pd.Series(known[spec["label"]].astype(int).to_numpy(), index=known[spec["id"]])
    if drop_labelled and labels is not None:
        online = online[~online[spec["id"]].isin(labels.index)].reset_index(drop=True)
    if online.empty:
        return None
    held_out = control_draw(online[spec["id"]], spec["online_as_of"], params.random_state,
                            params.decision.control_share)  # fmt: skip
    return user_rows(model, contract, online, spec["id"], params.decision, labels,
                     control_draw=held_out)  # fmt: skip


def _score_numbers(*args) -> tuple | None:
    """Pass 1 on a piece: the numbers the ranks and the report need, and the scored
    table's schema; the rows themselves (three reason texts each) are not kept. None for a
    piece with nobody to score (all left out)."""
    rows = _user_rows(*args)
    if rows is None:
        return None
    schema = pa.Table.from_pandas(rows.table.head(1), preserve_index=False).schema
    return rows.numbers, rows.reason_names, rows.unexplained, schema


def _score_ranked(*args, position: np.ndarray, start: int, stop: int, users: int) -> pa.Table:
    """Pass 2 on a piece: its rows again (the same bits: a row's values depend on it
    alone), with rank and decile (from `position`, each user's row in the file) where
    `score.with_ranks` puts them."""
    from churn.score import decile_of, with_ranks

    rows = _user_rows(*args)
    rank = position[start:stop] + 1
    table = with_ranks(rows.table, rank, decile_of(rank, users))
    return pa.Table.from_pandas(table, preserve_index=False)


def score_file(
    cluster: Client, path: Path, out: Path, model, contract: dict, spec: dict, params: Params,
    labels_path: Path | None, drop_labelled: bool,
):  # fmt: skip
    """score's work on the cluster, in two passes over the pieces of the online table, the
    champion shipped once to each worker (`ship`). Pass 1 scores each piece by the local
    `user_rows` and returns only its numbers; the client ranks the gathered probabilities.
    Pass 2 scores each piece again with its ranks and feeds its rows straight into the
    shuffle that writes the file in rank order (as prepare's splits): no worker holds the
    scored rows (three reason texts each) of more than its pieces in flight. The file is
    the local engine's bytes. Returns (report, gains) of `score.summarise`, or None when
    no user is left to score."""
    import pyarrow.parquet as pq
    from dask import delayed

    from churn.score import ranking, summarise

    shipped = ship(cluster, model)
    labelled = None if labels_path is None else str(labels_path.resolve())
    jobs = [(str(path.resolve()), labelled, piece, shipped, contract, spec, params,
             drop_labelled) for piece in pieces(path, params.dask.partition_rows)]  # fmt: skip
    passed = cluster.gather([cluster.submit(_score_numbers, *job, pure=False) for job in jobs])
    kept = [(job, first) for job, first in zip(jobs, passed, strict=True) if first is not None]
    if not kept:  # everyone left out
        return None
    jobs, firsts = [k[0] for k in kept], [k[1] for k in kept]
    merged = {key: np.concatenate([f[0][key] for f in firsts]) for key in firsts[0][0]}
    sizes = [len(f[0]["probability"]) for f in firsts]
    _, reason_names, unexplained, _ = firsts[0]
    _, rank, _ = ranking(merged["probability"])
    position = ship(cluster, rank - 1)  # each user's row in the file
    starts, users = np.cumsum([0, *sizes]), int(sum(sizes))
    ranked = [delayed(_score_ranked, pure=False)(*job, position=position, start=int(starts[i]),
                                                 stop=int(starts[i + 1]), users=users)
              for i, job in enumerate(jobs)]  # fmt: skip
    schema = firsts[int(np.argmax(sizes))][3]
    schema = schema.insert(schema.get_field_index("expected_value") + 1,
                           pa.field("rank", pa.int64()))  # fmt: skip
    schema = schema.insert(schema.get_field_index("rank") + 1, pa.field("decile", pa.int64()))
    del rank
    _write_split(cluster, ranked, sizes, position, users, out, schema,
                 params.dask.partition_rows)  # fmt: skip
    online_columns = pq.ParquetFile(path).schema_arrow.names
    log.info("dask: scored %d users in %d partitions", sum(sizes), len(sizes))
    return summarise(merged, float(contract["threshold"]), online_columns, params.decision,
                     reason_names, unexplained)  # fmt: skip


def _observed(path: str, piece: Piece, spec: dict) -> list[dict]:
    from churn.model import feature_names, observed_features

    return observed_features(spec, _piece(path, piece, feature_names(spec)))


def training_split(cluster: Client, path: Path, spec: dict, params: Params):
    """train's `TrainingSplit` of a prepared file on the cluster: the label column read
    here (the samples are stratified on it), the contract's observed values computed per
    piece on the workers and merged, and only the rows of the CV and fit samples (and
    the first 100: MLflow's example) gathered: the same samples as the local engine's."""
    from churn.model import feature_names, merge_observed, sample_index
    from churn.train import TrainingSplit

    p, names, label = params.train, feature_names(spec), spec["label"]
    y = pd.read_parquet(path, columns=[label])[label].astype(int)
    every = np.arange(len(y))
    cv_rows = sample_index(y, p.cv_max_rows, params.random_state)
    fit_rows = sample_index(y, p.fit_max_rows, params.random_state)
    cv_rows = every if cv_rows is None else cv_rows
    fit_rows = every if fit_rows is None else fit_rows
    wanted = np.union1d(np.union1d(cv_rows, fit_rows), every[:100])
    rows = gather_rows(cluster, path, wanted, names)
    resolved = str(path.resolve())
    parts = [cluster.submit(_observed, resolved, piece, spec)
             for piece in pieces(path, params.dask.partition_rows)]  # fmt: skip
    observed = merge_observed(cluster.gather(parts))
    log.info("dask: gathered %d of %d training rows (CV %d, fit %d)", len(wanted), len(y),
             len(cv_rows), len(fit_rows))  # fmt: skip
    return TrainingSplit(len(y), (rows.loc[cv_rows], y.iloc[cv_rows]),
                         (rows.loc[fit_rows], y.iloc[fit_rows]), observed,
                         rows.loc[every[:100]].reset_index(drop=True))  # fmt: skip
