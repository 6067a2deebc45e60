"""churn.online without a server: table names, look-ups in the file store, the rows a
PostgreSQL look-up turns back into the parquet's dtypes, and the settings that choose a
store. (tests/integration/test_online_postgres.py runs the real PostgreSQL.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn import online
from churn.errors import ChurnError
from churn.params import parse_params
from churn.promote import publish_store
from churn.serving.settings import Settings


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["a", "b", "c"],
        "tenure": np.array([1, 2, 3], dtype="int64"),
        "watch_hours": [1.5, np.nan, 3.0],
        "plan": ["basic", None, "premium"],
        "promo": [True, False, True],
    })  # fmt: skip


def test_table_names_are_safe_identifiers_of_the_content():
    sha = "0123456789abcdef" * 4
    assert online.table_name("streamflow-churn", sha) == "online_streamflow_churn_0123456789ab"
    hostile = online.table_name('x"; DROP TABLE users; --', sha)
    assert online.TABLE.fullmatch(hostile) and '"' not in hostile and ";" not in hostile
    assert online.table_name("A" * 100, sha).startswith("online_" + "a" * 40 + "_")
    assert not online.TABLE.fullmatch("users")  # a pointer naming another table is refused


def test_the_file_store_finds_ids_in_request_order_and_names_the_unknown():
    table = online.MemoryTable(frame(), "2024-06-30", "t.parquet")
    found = table.find(["c", "nobody", "a", "c"])
    assert found.ids == ["c", "a", "c"] and found.unknown == ["nobody"]
    assert found.index.tolist() == [2, 0, 2]
    assert found.frame()["user_id"].tolist() == ["c", "a", "c"]
    assert found.frame() is found.frame()  # built once per request
    assert table.describe() == {"kind": "file", "source": "t.parquet", "version": None,
                                "as_of": "2024-06-30", "n_users": 3}  # fmt: skip


def test_rows_from_postgres_come_back_with_the_parquet_dtypes():
    table = online.PostgresTable.__new__(online.PostgresTable)  # no connection: _frame only
    source = frame()
    table.kinds = {c: online._kind(source[c].dtype) for c in source.columns}
    assert table.kinds == {"user_id": "text", "tenure": "int", "watch_hours": "float",
                           "plan": "text", "promo": "bool"}  # fmt: skip
    rows = [
        ("a", 1, 1.5, "basic", True),
        ("b", 2, None, None, False),
        ("c", 3, 3.0, "premium", True),
    ]
    pd.testing.assert_frame_equal(table._frame(rows), source)
    empty = table._frame([])
    assert list(empty.columns) == list(source.columns) and len(empty) == 0
    # an int column with a NULL stays whole numbers in an object column, not a crash
    assert table._frame([("a", None, 1.0, "x", True)])["tenure"].tolist() == [None]


def test_the_postgres_store_needs_a_dsn_and_names_the_variable(monkeypatch):
    monkeypatch.delenv(online.DSN_ENV, raising=False)
    with pytest.raises(ChurnError, match="CHURN_ONLINE_DSN"):
        Settings(online_store="postgres")
    with pytest.raises(ChurnError, match="CHURN_ONLINE_STORE='redis'"):
        Settings(online_store="redis")
    params = parse_params({"serve": {"online_store": "postgres"}})
    with pytest.raises(ChurnError, match=r"serve\.online_store: postgres.*CHURN_ONLINE_DSN"):
        publish_store(params, "unused", "unused")
    assert publish_store(parse_params({}), "unused", "unused") is None  # file: registry's job
    with pytest.raises(ChurnError, match=r"serve\.online_store"):
        parse_params({"serve": {"online_store": "redis"}})


def test_settings_take_the_store_from_params_unless_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("serve:\n  online_store: postgres\n")
    monkeypatch.setenv(online.DSN_ENV, "postgresql://u@127.0.0.1:1/db")
    monkeypatch.delenv("CHURN_ONLINE_STORE", raising=False)
    assert Settings.from_env().online_store == "postgres"
    monkeypatch.setenv("CHURN_ONLINE_STORE", "file")
    assert Settings.from_env().online_store == "file"


def test_a_dsn_in_a_message_has_no_password():
    shown = online.safe_dsn("postgresql://churn:s3cret@db.example:5432/online")
    assert "s3cret" not in shown and "db.example" in shown


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(ChurnError, match="cannot connect"):
        online.PostgresTable("postgresql://nobody:pw@127.0.0.1:1/none", "streamflow-churn")
