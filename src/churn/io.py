"""Small file helpers: atomic, deterministic writes and hashing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn.errors import ChurnError

if TYPE_CHECKING:
    import pyarrow as pa

REPORTS_DIR = Path("reports")  # the pipeline's reports (metrics, plots, decisions)


def round_floats(value: Any, digits: int = 6) -> Any:
    """Round every float in a nested structure so outputs are stable across runs."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy a file so readers see the old or the new one, never a partial one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, payload: Any, digits: int = 6) -> None:
    text = json.dumps(round_floats(payload, digits), indent=2, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, engine="pyarrow", compression="snappy")


ROW_GROUP = 1024 * 1024  # pyarrow's default row group: what write_table gives a whole table


def _like_pandas(table: pa.Table) -> pa.Table:
    """The table with the pandas metadata `write_parquet` would give the same data."""
    import pyarrow as pa

    plain = table.replace_schema_metadata(None)
    like_pandas = pa.Table.from_pandas(
        plain.slice(0, 1).to_pandas(), schema=plain.schema, preserve_index=False
    )
    return plain.replace_schema_metadata(like_pandas.schema.metadata)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write an Arrow table exactly as `write_parquet` writes the same data as pandas (the
    pandas metadata included): the bytes, and so DVC's hashes, do not depend on which
    library built the table."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_like_pandas(table), path, compression="snappy")


class ParquetStream:
    """One parquet file from tables added in order, holding at most a row group and a
    table: the bytes `write_table` gives their concatenation (the same row groups, the same
    metadata). The dask engine writes a table too large for one process with it."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.writer = None

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += len(table)
        while self.rows >= ROW_GROUP:
            self._flush(ROW_GROUP)

    def _flush(self, rows: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        whole = pa.concat_tables(self.pending)
        group, rest = whole.slice(0, rows), whole.slice(rows)
        if self.writer is None:  # the metadata of the first rows, as write_table's
            group = _like_pandas(group)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, group.schema, compression="snappy")
        self.writer.write_table(group.replace_schema_metadata(self.writer.schema.metadata))
        self.pending, self.rows = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
        if self.writer is None:
            write_table(self.schema.empty_table(), self.path)
        else:
            self.writer.close()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    tmp.chmod(0o755)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require(*paths: Path) -> None:
    """Fail with one line naming the first missing input of a stage."""
    for path in paths:
        if not path.exists():
            raise ChurnError(f"{path}: not found; run the earlier stages first (dvc repro)")
