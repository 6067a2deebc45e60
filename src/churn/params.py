"""The one typed loader for params.yaml."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from churn.errors import ChurnError
from churn.io import atomic_write_text


def _iso_date(value: Any) -> str:
    """Accept '2024-01-31' (or a YAML date) and return the ISO string."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = value.strip() if isinstance(value, str) else ""
    if len(text) == 10:
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    shown = repr(value).replace("{", "(").replace("}", ")")
    raise PydanticCustomError("iso_date", f"malformed date {shown}: expected a quoted YYYY-MM-DD")


def _iso_date_or_latest(value: Any) -> str:
    if isinstance(value, str) and value.strip() == "latest":
        return "latest"
    return _iso_date(value)


IsoDate = Annotated[str, BeforeValidator(_iso_date)]
IsoDateOrLatest = Annotated[str, BeforeValidator(_iso_date_or_latest)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticParams(_Frozen):
    n_users: int = Field(7043, ge=10, description="users per generated month")
    n_months: int = Field(6, ge=1, le=120, description="month-end snapshots generated")
    start: IsoDate = Field("2024-01-31", description="the first month-end")
    seed: int = Field(2024, description="the generator's seed (same seed, same data)")
    drift_from_month: int = Field(3, ge=0, description="0-based month index where drift starts")
    offer_effect: float = Field(
        0.25, ge=0.0, le=1.0,
        description="true share of contacted churners the offer keeps (simulated campaigns)",
    )  # fmt: skip


class SnapshotsParams(_Frozen):
    first_as_of: IsoDate | None = Field(
        None, description="month-end of the first folder when folder names are not dates"
    )
    drop_columns: list[str] = Field(
        default_factory=list, description="feature columns the model must not use"
    )


class TableParams(_Frozen):
    id_column: str = Field("customer_id", description="the customer id column")
    label_column: str = Field("churn", description="the churn label column")
    positive_label: str | None = Field(
        None, description="the label value meaning churned (default: true, yes, 1)"
    )
    date_column: str | None = Field(None, description="snapshot date column, one per date")
    as_of: IsoDate | None = Field(None, description="snapshot date when there is no date column")
    non_negative: list[str] = Field(
        default_factory=list, description="columns that must be >= 0 (counts, money)"
    )
    signed: list[str] = Field(
        default_factory=list,
        description="numeric columns allowed below 0 although the first snapshot has no "
        "negative value (every other such column is inferred non-negative)",
    )
    drop_columns: list[str] = Field(
        default_factory=list, description="columns left out (not read as features)"
    )
    max_non_numeric_share: float = Field(
        0.01, ge=0.0, le=0.5,
        description="a mostly numeric column may hold at most this share of non-numeric "
        "cells (read as missing); more is refused, naming column, share and ids",
    )  # fmt: skip


class IngestParams(_Frozen):
    source: Literal["synthetic", "snapshots", "table"] = Field(
        "synthetic", description="the built-in generator, month folders, or one flat table"
    )
    path: str = Field("data/external", description="folder (snapshots) or file (table)")
    max_null_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="largest share of missing values per feature"
    )
    synthetic: SyntheticParams = SyntheticParams()
    snapshots: SnapshotsParams = SnapshotsParams()
    table: TableParams = TableParams()


class PrepareParams(_Frozen):
    test_size: float = Field(0.2, gt=0.0, lt=1.0, description="stratified test share")


class HistGBParams(_Frozen):
    """sklearn HistGradientBoostingClassifier's parameter of the same name."""

    learning_rate: float = Field(0.05, gt=0)
    max_iter: int = Field(100, ge=1)
    max_leaf_nodes: int = Field(6, ge=2)
    max_depth: int | None = None
    min_samples_leaf: int = Field(40, ge=1)
    l2_regularization: float = Field(1.0, ge=0)


class RandomForestParams(_Frozen):
    """sklearn RandomForestClassifier's parameter of the same name."""

    n_estimators: int = Field(300, ge=1)
    max_depth: int | None = 10
    min_samples_leaf: int = Field(5, ge=1)
    max_features: str | float = "sqrt"


class LogisticRegressionParams(_Frozen):
    """sklearn LogisticRegression's parameter of the same name."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, ge=1)


class TrainParams(_Frozen):
    model: Literal["hist_gb", "random_forest", "logistic_regression", "auto"] = Field(
        "auto", description="an estimator, or auto: the best of a seeded CV search"
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="weight classes by inverse frequency before calibration"
    )
    calibration: Literal["sigmoid", "isotonic", "none"] = Field(
        "sigmoid", description="probability calibration fitted on out-of-fold predictions"
    )
    cv_folds: int = Field(5, ge=2, le=20, description="stratified folds (calibration, CV, auto)")
    cv_max_rows: int = Field(
        50_000, ge=1000, description="CV estimates (threshold, auto) on a seeded sample above"
    )
    fit_max_rows: int | None = Field(
        2_000_000, ge=1000, description="the final fit on a seeded sample above (null: all)"
    )
    threshold: float | Literal["auto"] = Field(
        "auto", description="churn decision threshold, or auto: the most net value (decision)"
    )
    hist_gb: HistGBParams = HistGBParams()
    random_forest: RandomForestParams = RandomForestParams()
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    max_categories: int = Field(
        20, ge=2, description="levels kept per categorical with more; rarer ones: infrequent"
    )
    allow_leaky: list[str] = Field(
        default_factory=list,
        description="features allowed to predict the label almost alone ('*': any, and the "
        "model's own AUC check)",
    )


class DecisionParams(_Frozen):
    """The retention offer: what calling a user costs and what a saved user is worth."""

    offer_cost: float = Field(50.0, ge=0.0, description="cost of one offer (call + incentive)")
    save_rate: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["measured"] = Field(
        0.25,
        description="share of churners an offer keeps, or `measured`: the last campaign's "
        "measurement (campaigns/<lineage>.json) when narrow enough, else assumed_save_rate",
    )
    assumed_save_rate: float = Field(
        0.25, gt=0.0, le=1.0, description="save_rate: measured, until a measurement is narrow"
    )
    max_save_rate_interval: float = Field(
        0.2, gt=0.0, le=2.0, description="a measurement is used when its 95 % interval is "
        "narrower than this",
    )  # fmt: skip
    control_share: float = Field(
        0.1, ge=0.0, lt=1.0, description="seeded share of would-be contacts kept as a control "
        "group (not called): what measures the save rate",
    )  # fmt: skip
    value_months: float = Field(12.0, gt=0.0, description="months of fee a saved user is worth")
    fee_column: str = Field("monthly_fee", description="monthly fee feature, when present")
    customer_value: float = Field(
        500.0, gt=0.0, description="value of a saved user when there is no fee column"
    )


class ScoreParams(_Frozen):
    known_outcomes: bool = Field(
        False,
        description="also rank users whose outcome the model was trained or tested on "
        "(the newest snapshot is the training one: one-snapshot data)",
    )


class EvaluateParams(_Frozen):
    importance_rows: int = Field(5000, ge=100, description="rows for permutation importance")


class DriftParams(_Frozen):
    current_as_of: IsoDateOrLatest = Field(
        "latest", description="snapshot compared with as_of (latest: the newest)"
    )
    threshold: float = Field(0.3, gt=0.0, le=1.0, description="drifted-feature share to retrain")
    max_auc_drop: float = Field(0.05, ge=0.0, description="AUC drop on current labels to retrain")
    max_rows: int = Field(200_000, ge=1000, description="sample each side above this many rows")
    count_categories: int = Field(
        5, ge=2, description="integer columns with few values: categorical"
    )


class PromoteParams(_Frozen):
    model_name: str = Field(
        "streamflow-churn", description="MLflow registered model = the lineage (registry/<name>/)"
    )
    metric: Literal["roc_auc", "pr_auc", "f1", "recall_at_top_10pct"] = Field(
        "roc_auc", description="the metric of the non-regression gate"
    )
    margin: float = Field(0.0, description="candidate - champion must be at least this")
    min_roc_auc: float = Field(0.75, ge=0.0, le=1.0, description="quality floor")
    min_pr_auc: float = Field(0.4, ge=0.0, le=1.0, description="quality floor")
    min_positive_rate: float = Field(
        0.02, ge=0.0, le=1.0, description="lowest predicted churn rate that passes"
    )
    max_positive_rate: float = Field(
        0.7, ge=0.0, le=1.0, description="highest predicted churn rate that passes"
    )
    latency_budget_ms: float = Field(500.0, gt=0, description="1 000-row batch predict_proba")
    max_ece: float = Field(
        0.05, gt=0.0, le=1.0, description="calibration ceiling: expected calibration error"
    )
    allow_contract_change: bool = Field(
        False, description="accept features that differ from the champion's"
    )
    min_oot_roc_auc: float | None = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="floor on next month's ROC AUC when a later month has "
        "labels (null: no floor, stated in the report)",
    )
    max_oot_drop: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="allowed drop of next month's ROC AUC vs the champion's on the same month",
    )


class ServeParams(_Frozen):
    online_store: Literal["file", "postgres"] = Field(
        "file",
        description="where replicas read the online features: file (each holds the table in "
        "memory) or postgres (promote loads a versioned table into CHURN_ONLINE_DSN; replicas "
        "look users up by id)",
    )


class DaskParams(_Frozen):
    """How the dask engine cuts and runs the work (engine: dask)."""

    partition_rows: int = Field(
        1_000_000,
        ge=1,
        description="rows per partition of a written table (the output's "
        "part files follow from it, never from the cluster's size)",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="LocalCluster workers when CHURN_DASK_SCHEDULER is unset (null: one per core)",
    )
    memory_limit: str = Field(
        "auto",
        description="LocalCluster memory limit per worker, e.g. 3GB (auto: the "
        "machine's memory shared between the workers)",
    )


class MlflowParams(_Frozen):
    experiment: str = Field("streamflow-churn", description="MLflow experiment of the runs")


class GateRule(_Frozen):
    """How `churn gate` judges one metric of reports/metrics.json."""

    tolerance: float = Field(0.0, ge=0.0, description="allowed regression against the baseline")
    relative: bool = Field(False, description="tolerance is a fraction of the baseline value")
    min: float | None = Field(None, description="floor (higher-is-better metrics)")
    max: float | None = Field(None, description="ceiling (lower-is-better metrics)")
    optional: bool = Field(False, description="absent passes (oot.*: no later labelled month)")


def _default_gate_metrics() -> dict[str, GateRule]:
    return {
        "roc_auc": GateRule(tolerance=0.01),
        "pr_auc": GateRule(tolerance=0.02),
        "recall_at_top_10pct": GateRule(tolerance=0.1, relative=True),
        "brier": GateRule(tolerance=0.1, relative=True),
        "ece": GateRule(tolerance=0.02, max=0.05),
        "roc_auc_cv_mean": GateRule(tolerance=0.01),
        "roc_auc_cv_std": GateRule(max=0.05),
        "oot.roc_auc": GateRule(tolerance=0.02, optional=True),
        "oot.ece": GateRule(max=0.1, optional=True),
    }


class GateParams(_Frozen):
    metrics: dict[str, GateRule] = Field(
        default_factory=_default_gate_metrics, description="one rule per metric (below)"
    )


class Params(_Frozen):
    as_of: IsoDate = Field("2024-01-31", description="training snapshot, a quoted ISO date")
    random_state: int = Field(42, description="split, model and sampling seed")
    engine: Literal["local", "dask"] = Field(
        "local",
        description="local (pandas/Arrow in this process) or dask (the batch work "
        "in partitions on a dask cluster: CHURN_DASK_SCHEDULER, or a LocalCluster)",
    )
    dask: DaskParams = DaskParams()
    ingest: IngestParams = IngestParams()
    prepare: PrepareParams = PrepareParams()
    train: TrainParams = TrainParams()
    decision: DecisionParams = DecisionParams()
    evaluate: EvaluateParams = EvaluateParams()
    drift: DriftParams = DriftParams()
    promote: PromoteParams = PromoteParams()
    score: ScoreParams = ScoreParams()
    serve: ServeParams = ServeParams()
    mlflow: MlflowParams = MlflowParams()
    gate: GateParams = GateParams()


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; errors name the key path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ChurnError(
            f"{source}: key '{where}' breaks rule '{first['type']}': {first['msg']}"
        ) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ChurnError(f"{path}: not found (run from the repo root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ChurnError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ChurnError(f"{path}: expected a mapping at the top level")
    return parse_params(raw, str(path))


def _parse_value(text: str) -> Any:
    """A command-line value as YAML would read it; dates stay ISO strings."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # e.g. 2024-13-01: the params check names it
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`key.sub=value` strings (as `dvc exp run -S` takes them) to a mapping."""
    updates = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ChurnError(f"'{item}': expected KEY=VALUE, e.g. as_of=2024-04-30")
        updates[key.strip()] = _parse_value(value)
    return updates


def update_params_file(path: str | Path, updates: dict[str, Any]) -> Params:
    """Set dotted keys in params.yaml in place, keeping comments, order and quoting.

    The result is validated before anything is written; an unknown key or a value
    that breaks a rule leaves the file untouched.
    """
    from io import StringIO

    from ruamel.yaml import YAML

    path = Path(path)
    load_params(path)  # the file as it stands must be valid
    round_trip = YAML()
    round_trip.preserve_quotes = True
    round_trip.width = 4096
    round_trip.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = round_trip.load(path.read_text())
    for dotted, value in updates.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, dict) or leaf not in node:
            raise ChurnError(f"{path}: no key '{dotted}' to set")
        old = node[leaf]
        if isinstance(old, str) and isinstance(value, str):
            value = type(old)(value)  # keep the quoting style (as_of stays a quoted string)
        node[leaf] = value
    out = StringIO()
    round_trip.dump(data, out)
    text = out.getvalue()
    params = parse_params(yaml.safe_load(text), str(path))
    atomic_write_text(path, text)
    return params
