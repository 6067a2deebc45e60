import json

import pytest

from churn.io import atomic_write_bytes, atomic_write_text, round_floats, staged_dir, write_json


def test_round_floats_is_recursive_and_drops_non_finite():
    assert round_floats({"a": [0.1234567891, float("nan")], "b": 2}, 3) == {
        "a": [0.123, None],
        "b": 2,
    }


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "x.json"
    write_json(target, {"v": 1.0000001})
    assert json.loads(target.read_text()) == {"v": 1.0}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):  # fails inside the write, after the temp file exists
        atomic_write_bytes(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_staged_dir_publishes_only_on_success(tmp_path):
    target = tmp_path / "raw"
    with staged_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("validation failed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_a_streamed_table_is_the_bytes_of_the_whole_one(tmp_path, monkeypatch):
    """ParquetStream cuts the row groups where write_table cuts them (1 000 rows here,
    1 048 576 in use), whatever the sizes of the pieces it is given."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn import io

    monkeypatch.setattr(io, "ROW_GROUP", 1000)
    n = 3500
    table = pa.table({
        "user_id": [f"SF-{i:07d}" for i in range(n)],
        "x": np.random.default_rng(0).random(n),
        "plan": pa.array([None if i % 7 == 0 else "DSL" for i in range(n)], pa.string()),
        "churn_label": np.arange(n) % 3 == 0,
    })  # fmt: skip
    pq.write_table(io._like_pandas(table), tmp_path / "whole.parquet", compression="snappy",
                   row_group_size=1000)  # fmt: skip
    stream = io.ParquetStream(tmp_path / "streamed.parquet", table.schema)
    for start in range(0, n, 700):
        stream.add(table.slice(start, 700))
    stream.close()

    def digest(name: str) -> str:
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()

    assert pq.ParquetFile(tmp_path / "streamed.parquet").metadata.num_row_groups == 4
    assert digest("streamed.parquet") == digest("whole.parquet")
    io.ParquetStream(tmp_path / "none.parquet", table.schema).close()
    io.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    assert digest("none.parquet") == digest("empty.parquet")
