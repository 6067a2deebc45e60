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
