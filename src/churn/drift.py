"""drift: Evidently data drift between the training snapshot and the current one.

Evidently is used only inside `compute_drift`; swapping the drift library touches
this function alone. Writes reports/drift.json (details) and a self-contained
reports/drift.html whose random element ids are renumbered so reruns are identical; the
HTML opens with the pipeline's own verdict (configured threshold, reasons, concept drift),
since Evidently's page knows only its own share test.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from churn import engine, modelfile
from churn.evaluate import REPORTS_DIR
from churn.io import atomic_write_text, read_json, require, round_floats, write_json
from churn.model import churn_scores, feature_names, seeded_rows
from churn.params import DriftParams, Params
from churn.prepare import PREPARED_DIR
from churn.train import MODEL_FILE, MODELS_DIR

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("churn.drift")

SCORE = "churn_score"
_RANDOM_IDS = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=metric_)[0-9a-f]{32}"
)


@dataclass(frozen=True)
class DriftResult:
    summary: dict[str, Any]
    html: str


def column_types(reference: pd.DataFrame, spec: dict, count_categories: int) -> dict[str, str]:
    """Declare every feature's type: categories and booleans are categorical, and so are
    integer counts with few distinct values (failed payments, tickets); the rest numerical."""
    types = {}
    for feature in spec["features"]:
        name, kind = feature["name"], feature["kind"]
        if kind in ("category", "bool"):
            types[name] = "categorical"
            continue
        values = reference[name].dropna().to_numpy()
        is_integer = values.size > 0 and bool(np.all(values == np.round(values)))
        few = len(np.unique(values)) <= count_categories
        types[name] = "categorical" if is_integer and few else "numerical"
    return types


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """p-value tests flag drift below the threshold, distances at or above it."""
    return score < threshold if "p_value" in method else score >= threshold


def _stable_html(html: str) -> str:
    ids: dict[str, str] = {}

    def renumber(match: re.Match) -> str:
        text = match.group(0)
        n = ids.setdefault(text, str(len(ids)))
        return f"{int(n):032x}" if len(text) == 32 else f"00000000-0000-0000-0000-{int(n):012x}"

    return _RANDOM_IDS.sub(renumber, html)


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    rows = seeded_rows(len(frame), max_rows, seed)
    return frame if rows is None else frame.take(rows)


def read_sample(
    path: Path, max_rows: int, seed: int, cluster: Client | None = None
) -> tuple[pd.DataFrame, int]:
    """`_sample` of a parquet table, read as Arrow so that only the sample becomes pandas
    (10 M users: ~2.5 GB a table otherwise), and the table's row count. With a dask
    `cluster` the workers read the file and send only the sampled rows."""
    import pyarrow.parquet as pq

    if cluster is not None:
        n_rows = pq.ParquetFile(path).metadata.num_rows
        rows = seeded_rows(n_rows, max_rows, seed)
        if rows is not None:
            return engine.gather_rows(cluster, path, rows), n_rows
    table = pq.read_table(path)
    rows = seeded_rows(len(table), max_rows, seed)
    if rows is None:
        return table.to_pandas(), len(table)
    frame = table.take(rows).to_pandas()
    frame.index = pd.Index(rows)  # the labels DataFrame.sample keeps
    return frame, len(table)


def _column_results(metrics: list[dict]) -> dict[str, dict]:
    out = {}
    for metric in metrics:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        score = float(metric["value"])
        threshold = float(config["threshold"])
        method = str(config["method"])
        out[config["column"]] = {
            "method": method,
            "score": score,
            "threshold": threshold,
            "drifted": is_drifted(method, score, threshold),
        }
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    types: dict[str, str],
    extra: dict[str, str] | None = None,
    drift_share: float = 0.5,
) -> tuple[dict[str, dict], str]:
    """Per-column drift (method, score, threshold, verdict) and the HTML report.

    `types` maps feature columns to "numerical"/"categorical"; `extra` adds columns
    (e.g. the model score or the label) that are tested but not counted as features.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    extra = extra or {}
    all_types = {**types, **extra}
    definition = DataDefinition(
        numerical_columns=[c for c, t in all_types.items() if t == "numerical"],
        categorical_columns=[c for c, t in all_types.items() if t == "categorical"],
    )
    columns = list(all_types)
    metrics: list = [DataDriftPreset(columns=list(types), drift_share=drift_share)]
    metrics += [ValueDrift(column=c) for c in extra]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # constant columns make Evidently's correlation widgets divide by zero
        warnings.simplefilter("ignore")
        snapshot = Report(metrics).run(
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        )
        html = snapshot.get_html_str(as_iframe=False)
    return _column_results(snapshot.dict()["metrics"]), _stable_html(html)


def _label_flip_rate(reference: pd.DataFrame, current: pd.DataFrame, id_col: str, label: str):
    both = reference[[id_col, label]].merge(current[[id_col, label]], on=id_col)
    if both.empty:
        return None
    return float((both[f"{label}_x"] != both[f"{label}_y"]).mean())


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    test: pd.DataFrame,
    model: Any,
    spec: dict,
    p: DriftParams,
    random_state: int,
    sizes: tuple[int, int] | None = None,
    test_scores: np.ndarray | None = None,
) -> DriftResult:
    """Feature drift, prediction drift and (when current has labels) target and concept drift.
    `sizes`: the tables' row counts when `reference` and `current` are `read_sample`s;
    `test_scores`: the model's scores of `test` when they were computed elsewhere (then
    `test` needs only the id and the label)."""
    names = feature_names(spec)
    label, id_col = spec["label"], spec["id"]
    n_reference, n_current = sizes or (len(reference), len(current))
    reference = _sample(reference, p.max_rows, random_state)
    current = _sample(current, p.max_rows, random_state)
    ref_scores = churn_scores(model, reference, names)
    cur_scores = churn_scores(model, current, names)
    has_labels = label in current.columns
    extra = {SCORE: "numerical"}
    reference = reference.assign(**{SCORE: ref_scores})
    current = current.assign(**{SCORE: cur_scores})
    if has_labels:
        extra[label] = "categorical"
        reference = reference.assign(**{label: reference[label].astype(int)})
        current = current.assign(**{label: current[label].astype(int)})

    types = column_types(reference, spec, p.count_categories)
    columns, html = compute_drift(reference, current, types, extra, p.threshold)
    features = {name: {"type": types[name], **columns[name]} for name in types}
    drifted = sorted(name for name, c in features.items() if c["drifted"])
    share = len(drifted) / len(features)

    prediction = {
        **columns[SCORE],
        "reference_mean": float(ref_scores.mean()),
        "current_mean": float(cur_scores.mean()),
    }
    target = concept = None
    if has_labels:
        target = {
            **columns[label],
            "reference_rate": float(reference[label].mean()),
            "current_rate": float(current[label].mean()),
            "label_flip_rate": _label_flip_rate(reference, current, id_col, label),
        }
        y_test = test[label].astype(int).to_numpy()
        if test_scores is None:
            test_scores = churn_scores(model, test, names)
        auc_reference = float(roc_auc_score(y_test, test_scores))
        # only users the model did not train on: scoring its training rows would flatter it
        trained_on = set(reference[id_col]) - set(test[id_col])
        unseen = ~current[id_col].isin(trained_on).to_numpy()
        current_labels = current[label].to_numpy()[unseen]
        auc_current = (float(roc_auc_score(current_labels, cur_scores[unseen]))
                       if len(set(current_labels)) == 2 else auc_reference)  # fmt: skip
        concept = {
            "auc_reference_test": auc_reference,
            "auc_current": auc_current,
            "n_current_scored": int(unseen.sum()),
            "auc_drop": auc_reference - auc_current,
            "threshold": p.max_auc_drop,
            "drifted": auc_reference - auc_current > p.max_auc_drop,
        }
    single = spec["as_of"] == spec["current_as_of"]
    retrain = not single and (share >= p.threshold or bool(concept and concept["drifted"]))
    summary = {
        "single_snapshot": single,
        "reference_as_of": spec["as_of"],
        "current_as_of": spec["current_as_of"],
        "n_reference": n_reference,
        "n_current": n_current,
        "sampled": n_reference > p.max_rows or n_current > p.max_rows,
        "sample_rows": p.max_rows if max(n_reference, n_current) > p.max_rows else None,
        "n_features": len(features),
        "n_drifted": len(drifted),
        "drift_share": share,
        "threshold": p.threshold,
        "drifted_columns": drifted,
        "retrain_recommended": retrain,
        "retrain_reasons": []
        if single
        else [
            reason
            for reason, hit in (
                (f"drift_share {share:.3f} >= {p.threshold}", share >= p.threshold),
                (
                    "concept drift: AUC on current labels dropped",
                    bool(concept and concept["drifted"]),
                ),
            )
            if hit
        ],
        "prediction_drift": prediction,
        "target_drift": target,
        "concept_drift": concept,
        "columns": features,
    }
    summary = round_floats(summary, 6)
    return DriftResult(summary, _with_verdict(html, summary))


def verdict_html(s: dict) -> str:
    """The pipeline's decision, stated first: Evidently's page shows only its own test."""
    import html as h

    if s["single_snapshot"]:
        headline = (f"Only one snapshot ({s['reference_as_of']}): the training data is compared "
                    "with itself, so this report cannot show drift. Add a later snapshot, or "
                    "set drift.current_as_of.")  # fmt: skip
    elif s["retrain_recommended"]:
        headline = "Retrain recommended: " + "; ".join(s["retrain_reasons"])
    else:
        headline = "No retrain needed"
    rows = [("snapshots", f"{s['reference_as_of']} (training) → {s['current_as_of']} (current)"),
            ("drifted features", f"{s['n_drifted']} of {s['n_features']} "
                                 f"({', '.join(s['drifted_columns']) or 'none'})"),
            ("drift share", f"{s['drift_share']:.3f}; retrain at ≥ {s['threshold']} "
                            "(params drift.threshold)")]  # fmt: skip
    concept = s.get("concept_drift")
    if concept:
        rows.append(("concept drift", f"ROC AUC {concept['auc_reference_test']:.3f} on the test "
                     f"split → {concept['auc_current']:.3f} on current labels of "
                     f"{concept['n_current_scored']} users not trained on; drop "
                     f"{concept['auc_drop']:.3f}, retrain above {concept['threshold']} "
                     "(drift.max_auc_drop)"))  # fmt: skip
    else:
        rows.append(("concept drift", "not measured: the current snapshot has no labels"))
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{h.escape(k)}</th>"
                    f"<td>{h.escape(v)}</td></tr>" for k, v in rows)  # fmt: skip
    return (f"<section id='churn-verdict' style='font-family:sans-serif;margin:1em;padding:1em;"
            f"border:2px solid #444'><h2>{h.escape(headline)}</h2><table>{cells}</table>"
            "<p>Below: Evidently's per-column report (its dataset verdict uses the same "
            "threshold).</p></section>")  # fmt: skip


def _with_verdict(page: str, summary: dict) -> str:
    match = re.search(r"</head>\s*<body[^>]*>", page)
    at = match.end() if match else 0
    return page[:at] + verdict_html(summary) + page[at:]


def run(
    params: Params,
    prepared_dir: Path = PREPARED_DIR,
    models_dir: Path = MODELS_DIR,
    reports_dir: Path = REPORTS_DIR,
) -> DriftResult:
    require(*(prepared_dir / name for name in ("reference.parquet", "current.parquet",
                                                "test.parquet", "features.json")),
            models_dir / MODEL_FILE)  # fmt: skip
    spec = read_json(prepared_dir / "features.json")
    p, seed = params.drift, params.random_state
    model = modelfile.load(models_dir / MODEL_FILE)
    test_path = prepared_dir / "test.parquet"
    with engine.maybe_client(params) as cluster:
        reference, n_reference = read_sample(prepared_dir / "reference.parquet", p.max_rows, seed,
                                             cluster)  # fmt: skip
        current, n_current = read_sample(prepared_dir / "current.parquet", p.max_rows, seed,
                                         cluster)  # fmt: skip
        if cluster is None:
            test, test_scores = pd.read_parquet(test_path), None
        else:  # scored on the workers; here only the ids and labels
            test = pd.read_parquet(test_path, columns=[spec["id"], spec["label"]])
            [test_scores] = engine.file_scores(cluster, test_path, [model], [feature_names(spec)],
                                               params.dask.partition_rows)  # fmt: skip
    log.info("drift %s -> %s (%d vs %d rows)", spec["as_of"], spec["current_as_of"],
             n_reference, n_current)  # fmt: skip
    result = drift_report(reference, current, test, model, spec, p, seed,
                          sizes=(n_reference, n_current), test_scores=test_scores)  # fmt: skip
    write_json(reports_dir / "drift.json", result.summary)
    atomic_write_text(reports_dir / "drift.html", result.html)
    s = result.summary
    log.info("drift share %.2f (%d/%d columns: %s); retrain recommended: %s",
             s["drift_share"], s["n_drifted"], s["n_features"],
             ", ".join(s["drifted_columns"]) or "none", s["retrain_recommended"])  # fmt: skip
    return result
