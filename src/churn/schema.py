"""The data contract: the six course tables, their columns and rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["id", "date", "bool", "category", "count", "amount", "numeric", "label"]

ID = "user_id"
LABEL = "churn_label"
LABEL_TABLE = "labels"

# Kinds that become model features, and how the model sees them.
FEATURE_KINDS: dict[str, str] = {
    "bool": "bool",
    "category": "category",
    "count": "numeric",
    "amount": "numeric",
    "numeric": "numeric",
    "date": "numeric",  # turned into days before as_of by prepare
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    max_null_rate: float | None = None  # None: the ingest.max_null_rate param


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _t(name: str, *columns: Column) -> Table:
    return Table(name, (Column(ID, "id", max_null_rate=0.0), *columns))


# plan_stream_* are empty for users without internet: a documented quirk, not an error.
COURSE_TABLES: tuple[Table, ...] = (
    _t(
        "users",
        Column("signup_date", "date", max_null_rate=0.0),
        Column("user_gender", "category", ("Female", "Male")),
        Column("user_is_senior", "bool"),
        Column("has_family", "bool"),
        Column("has_dependents", "bool"),
    ),
    _t(
        "subscriptions",
        Column("months_active", "count"),
        Column("plan_stream_tv", "bool", max_null_rate=0.6),
        Column("plan_stream_movies", "bool", max_null_rate=0.6),
        Column("contract_type", "category", ("Month-to-month", "One year", "Two year")),
        Column("paperless_billing", "bool"),
        Column("monthly_fee", "amount"),
        Column("total_paid", "amount"),
        Column("net_service", "category", ("DSL", "Fiber optic", "No")),
    ),
    _t(
        "usage_agg_30d",
        Column("watch_hours_30d", "amount"),
        Column("avg_session_mins_7d", "amount"),
        Column("unique_devices_30d", "count"),
        Column("skips_7d", "count"),
        Column("rebuffer_events_7d", "count"),
    ),
    _t("payments_agg_90d", Column("failed_payments_90d", "count")),
    _t(
        "support_agg_90d",
        Column("support_tickets_90d", "count"),
        Column("ticket_avg_resolution_hrs_90d", "amount"),
    ),
    _t(LABEL_TABLE, Column(LABEL, "label", max_null_rate=0.0)),
)

COURSE_TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in COURSE_TABLES)


def course_table(name: str) -> Table:
    return next(t for t in COURSE_TABLES if t.name == name)
