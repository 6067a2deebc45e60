"""The online feature table (the newest snapshot's features, one row per user id) where
serving reads it.

`file` (the default): the parquet promote published, read whole into each replica's
memory, every row passed through each model's preprocessing once at load (the fastest
look-up; memory grows with the users).

`postgres` (`serve.online_store: postgres`, the server in CHURN_ONLINE_DSN): promote
bulk-loads the table into PostgreSQL under a versioned name (`COPY` into a loading table,
primary key, then a rename, then the lineage's pointer moves, so a reader sees the old
table or the new one, never half of one). A replica reads the pointer at load and looks
users up by id with a prepared statement behind a small LRU cache: its memory does not
grow with the users.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from churn.fastpath import CHECK_ROWS, check_sample

log = logging.getLogger("churn.online")

STORES = ("file", "postgres")
DSN_ENV = "CHURN_ONLINE_DSN"
CACHE_ENV = "CHURN_ONLINE_CACHE"  # rows each replica keeps (LRU), default CACHE_ROWS
CACHE_ROWS = 10_000
POINTER = "churn_online_published"  # one row per lineage: the table readers use
COPY_ROWS = 100_000  # rows per CSV chunk sent to COPY (bounds the publisher's memory)
TABLE = re.compile(r"online_[a-z0-9_]{1,40}_[0-9a-f]{12}")  # what a pointer may name
NUMPY = {"int": "int64", "bool": "bool"}


@dataclass
class Found:
    """The rows of the requested ids that have features, in request order."""

    ids: list[str]
    unknown: list[str]
    build: Callable[[], pd.DataFrame]  # their features, built on the first frame() call
    index: np.ndarray | None = None  # file store: their rows (pre-transformed per model)
    records: list[tuple] | None = None  # postgres: the rows as fetched, in `columns` order
    columns: list[str] | None = None
    _frame: pd.DataFrame | None = field(default=None, repr=False)

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self.build()
        return self._frame


# --- the file store --------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryTable:
    """The whole online table in memory (file store)."""

    table: pd.DataFrame  # one row per user id
    as_of: str | None
    source: str  # the parquet read
    row_of: dict[str, int] = field(init=False, repr=False)
    kind: str = "file"

    def __post_init__(self) -> None:
        rows = {str(uid): i for i, uid in enumerate(self.table["user_id"])}
        object.__setattr__(self, "row_of", rows)

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns)

    @property
    def n_users(self) -> int:
        return len(self.row_of)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "version": None,
                "as_of": self.as_of, "n_users": self.n_users}  # fmt: skip

    def sample(self) -> pd.DataFrame:
        return check_sample(self.table)

    def find(self, ids: Sequence[str]) -> Found:
        rows = [self.row_of.get(uid) for uid in ids]
        index = np.array([r for r in rows if r is not None], dtype=int)
        known = [uid for uid, r in zip(ids, rows, strict=True) if r is not None]
        unknown = [uid for uid, r in zip(ids, rows, strict=True) if r is None]
        return Found(known, unknown, lambda: self.table.iloc[index], index)


def read_online(path: Path) -> pd.DataFrame:
    """An online parquet, one row per user id (the first of repeated ids)."""
    return pd.read_parquet(path).drop_duplicates("user_id").reset_index(drop=True)


def read_file_table(path: Path, as_of: str | None) -> MemoryTable:
    return MemoryTable(read_online(path), as_of, str(path))


# --- PostgreSQL --------------------------------------------------------------------------


def dsn_from_env(what: str) -> str:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        raise ChurnError(f"{what}: the postgres online store needs {DSN_ENV} (a libpq "
                         "connection string; `churn team up` prints the team's)")  # fmt: skip
    return dsn


def safe_dsn(dsn: str) -> str:
    """The connection string without its password, for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable DSN>"
    parts.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in parts.items())


def _connect(dsn: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ChurnError(f"online store {safe_dsn(dsn)}: cannot connect: "
                         f"{str(exc).strip()}") from None  # fmt: skip


def table_name(lineage: str, sha256: str) -> str:
    """The versioned table of a lineage's online parquet (its content's sha256)."""
    slug = re.sub(r"[^a-z0-9]+", "_", lineage.lower()).strip("_")[:40] or "lineage"
    return f"online_{slug}_{sha256[:12]}"


def _pg_type(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    return "text"


def _kind(dtype: Any) -> str:
    """How a column comes back: bool, int, float or text (as the parquet had it)."""
    return {"boolean": "bool", "bigint": "int", "double precision": "float"}.get(
        _pg_type(dtype), "text"
    )


def publish_postgres(parquet: Path, lineage: str, as_of: str | None, dsn: str) -> dict[str, Any]:
    """Load the online parquet into a versioned table and point the lineage at it. A table
    of the same content is reused (no second COPY); the pointer's previous table is kept
    for replicas that have not reloaded yet, older versions are dropped."""
    from psycopg import sql

    frame = read_online(parquet)
    frame["user_id"] = frame["user_id"].astype(str)
    frame = frame[["user_id", *(c for c in frame.columns if c != "user_id")]]  # row[0]: the id
    digest = hashlib.sha256(parquet.read_bytes()).hexdigest()
    name = table_name(lineage, digest)
    columns = [[c, _kind(frame[c].dtype)] for c in frame.columns]
    with _connect(dsn) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {POINTER} (lineage text PRIMARY KEY, "
                     "table_name text NOT NULL, previous text, sha256 text NOT NULL, "
                     "as_of text, n_users bigint NOT NULL, columns jsonb NOT NULL, "
                     "published_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        # one publisher per lineage at a time (a second promote waits here)
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [lineage])
        try:
            exists = conn.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is not None
            if exists:
                log.info("online store: %s already holds this table", name)
            else:
                _copy_table(conn, frame, name, f"{parquet} into {safe_dsn(dsn)}")
            current = conn.execute(f"SELECT table_name, previous FROM {POINTER} "
                                   "WHERE lineage = %s", [lineage]).fetchone()  # fmt: skip
            previous = current[0] if current else None
            if current and current[0] == name:  # republished: keep what was kept before
                previous = current[1]
            conn.execute(
                f"INSERT INTO {POINTER} (lineage, table_name, previous, sha256, as_of, n_users, "
                "columns) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (lineage) DO UPDATE "
                "SET table_name = excluded.table_name, previous = excluded.previous, "
                "sha256 = excluded.sha256, as_of = excluded.as_of, n_users = excluded.n_users, "
                "columns = excluded.columns, published_at = now()",
                [lineage, name, previous, digest, as_of, len(frame), json.dumps(columns)],
            )
            prefix = name[: -len(digest[:12])]
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND starts_with(tablename, %s)", [prefix]
            ).fetchall()  # fmt: skip
            for (old,) in tables:
                if old not in (name, previous) and TABLE.fullmatch(old):
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(old)))
                    log.info("online store: dropped %s", old)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [lineage])
    log.info("online store: %s serves %d users of %s (%s)", name, len(frame), as_of,
             safe_dsn(dsn))  # fmt: skip
    return {"kind": "postgres", "table": name, "version": digest[:12], "as_of": as_of,
            "n_users": len(frame)}  # fmt: skip


def _copy_table(conn: Any, frame: pd.DataFrame, name: str, what: str) -> None:
    """COPY the frame into <name>__loading, key and analyse it, then rename it to name (a
    failed load leaves no table under the versioned name, and the pointer unmoved)."""
    import psycopg

    try:
        _load(conn, frame, name)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ChurnError(f"loading {what} failed: {first}; the lineage's published table "
                         "is unchanged") from None  # fmt: skip


def _load(conn: Any, frame: pd.DataFrame, name: str) -> None:
    from psycopg import sql

    loading = sql.Identifier(f"{name}__loading")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(loading))
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_pg_type(frame[c].dtype)))
        for c in frame.columns
    )
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(loading, defs))
    names = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(loading, names)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for start in range(0, len(frame), COPY_ROWS):
            buffer = io.StringIO()
            frame.iloc[start : start + COPY_ROWS].to_csv(buffer, header=False, index=False)
            copy.write(buffer.getvalue())
            log.info("online store: copied %d of %d rows", min(start + COPY_ROWS, len(frame)),
                     len(frame))  # fmt: skip
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (user_id)").format(loading))
    conn.execute(sql.SQL("ANALYZE {}").format(loading))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(loading, sql.Identifier(name)))


class PostgresTable:
    """The lineage's published table in PostgreSQL, looked up by id (prepared statement)
    behind an LRU of recently served rows. Thread-safe: one connection, one lock."""

    kind = "postgres"

    def __init__(self, dsn: str, lineage: str, cache_rows: int = CACHE_ROWS) -> None:
        from psycopg import sql

        self.dsn, self.lineage, self.cache_rows = dsn, lineage, cache_rows
        self.conn = _connect(dsn)
        try:
            row = self.conn.execute(
                f"SELECT table_name, sha256, as_of, n_users, columns FROM {POINTER} "
                "WHERE lineage = %s", [lineage]
            ).fetchone()  # fmt: skip
        except Exception as exc:  # no pointer table yet: nothing was ever published
            row = None
            log.debug("online store pointer: %s", exc)
        if row is None:
            self.conn.close()
            raise ChurnError(f"online store {safe_dsn(dsn)}: no online table published for "
                             f"'{lineage}'; run `dvc repro` with serve.online_store: postgres "
                             "(promote publishes it)")  # fmt: skip
        table, self.sha256, self.as_of, self.n_users, kinds = row
        if not TABLE.fullmatch(table):
            self.conn.close()
            raise ChurnError(f"online store {safe_dsn(dsn)}: {POINTER} names {table!r} for "
                             f"'{lineage}', not an online table name")  # fmt: skip
        self.table = table
        self.kinds = {name: kind for name, kind in kinds}
        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.kinds)
        self._select = (
            sql.SQL("SELECT {} FROM {} WHERE user_id = ANY(%s)")
            .format(names, sql.Identifier(table))
            .as_string(self.conn)
        )
        self._sample = (
            sql.SQL("SELECT {} FROM {} ORDER BY user_id LIMIT %s")
            .format(names, sql.Identifier(table))
            .as_string(self.conn)
        )
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def columns(self) -> list[str]:
        return list(self.kinds)

    @property
    def version(self) -> str:
        return self.sha256[:12]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.table, "version": self.version,
                "as_of": self.as_of, "n_users": self.n_users}  # fmt: skip

    def _query(self, statement: str, args: list[Any]) -> list[tuple]:
        import psycopg

        with self._lock:
            try:
                return self.conn.execute(statement, args, prepare=True).fetchall()
            except psycopg.OperationalError:  # a restarted server: reconnect once
                self.conn.close()
                self.conn = _connect(self.dsn)
                return self.conn.execute(statement, args, prepare=True).fetchall()

    def _frame(self, rows: list[tuple]) -> pd.DataFrame:
        """Rows with the parquet's dtypes, built column by column from numpy arrays (~0.15 ms
        for one row; DataFrame.from_records and astype per column cost ~2 ms)."""
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.kinds)
        data = {}
        for (name, kind), values in zip(self.kinds.items(), columns, strict=True):
            if kind == "float":
                data[name] = np.array(values, dtype="float64")  # NULL -> NaN
            elif kind in NUMPY and None not in values:
                data[name] = np.array(values, dtype=NUMPY[kind])
            else:
                data[name] = np.array(values, dtype=object)
        return pd.DataFrame(data, copy=False)

    def sample(self) -> pd.DataFrame:
        return self._frame(self._query(self._sample, [CHECK_ROWS]))

    def find(self, ids: Sequence[str]) -> Found:
        rows: dict[str, tuple] = {}
        with self._lock:
            for uid in ids:
                hit = self._cache.get(uid)
                if hit is not None:
                    self._cache.move_to_end(uid)
                    rows[uid] = hit
        wanted = list(dict.fromkeys(uid for uid in ids if uid not in rows))
        if wanted:
            fetched = self._query(self._select, [wanted])
            with self._lock:
                for row in fetched:
                    rows[row[0]] = row
                    self._cache[row[0]] = row
                while len(self._cache) > self.cache_rows:
                    self._cache.popitem(last=False)
        known = [uid for uid in ids if uid in rows]
        unknown = [uid for uid in ids if uid not in rows]
        picked = [rows[uid] for uid in known]
        return Found(known, unknown, lambda: self._frame(picked), records=picked,
                     columns=self.columns)  # fmt: skip

    def close(self) -> None:
        self.conn.close()
