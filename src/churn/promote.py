"""promote: gate the candidate against the champion and move the `champion` alias.

The gates are pure functions of the two models, the test set and the reports, so
reports/promotion.json is the same on every rerun; measured latency goes only to
registry/<name>/history.jsonl. Inside `dvc exp run` (DVC_EXP_NAME) or with --dry-run,
promote decides and reports but touches neither registry/ nor the MLflow aliases.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from churn import engine, fastpath, modelfile, online, registry, tracking
from churn.errors import ChurnError
from churn.evaluate import (
    REPORTS_DIR,
    compute_metrics,
    ece_noise_floor,
    expected_calibration_error,
)
from churn.io import (
    atomic_write_text,
    read_json,
    require,
    round_floats,
    sha256_file,
    write_json,
)
from churn.model import churn_scores, feature_names, pandas_sample
from churn.params import Params, PromoteParams
from churn.prepare import PREPARED_DIR
from churn.train import CONTRACT_FILE, MODEL_FILE, MODELS_DIR

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("churn.promote")

PASS, FAIL, INFO = "pass", "fail", "info"


@dataclass(frozen=True)
class Candidate:
    model: Any
    sha256: str
    contract: dict
    metrics: dict


@dataclass(frozen=True)
class GateData:
    """A labelled split as the gates see it: its labels and columns, each model's scores of
    its rows (None: not scored: no rows, no champion model, or it lacks a column) and a
    batch of rows for the latency check. `gate_data` makes it of a table in memory; on
    the dask engine the scores come from the workers (`gate_data_of_file`)."""

    y: np.ndarray
    columns: list[str]
    candidate: np.ndarray | None
    champion: np.ndarray | None
    batch: pd.DataFrame


def gate_data(
    frame: pd.DataFrame, label: str, candidate: Any, names: list[str], champion: Any | None,
    champion_names: list[str],
) -> GateData:  # fmt: skip
    y = frame[label].astype(int).to_numpy() if label in frame.columns else np.zeros(0, int)
    rows = len(frame) > 0
    scores = churn_scores(candidate, frame, names) if rows else None
    usable = rows and champion is not None and all(n in frame.columns for n in champion_names)
    champ = churn_scores(champion, frame, champion_names) if usable else None
    return GateData(y, list(frame.columns), scores, champ, frame[names])


def gate_data_of_file(
    cluster: Client | None, path: Path, label: str, candidate: Any, names: list[str],
    champion: Any | None, champion_names: list[str], partition_rows: int,
) -> GateData:  # fmt: skip
    """`gate_data` of a prepared file: read here (local engine), or scored on the workers
    with only the labels and a latency batch here (dask)."""
    if cluster is None:
        return gate_data(pd.read_parquet(path), label, candidate, names, champion,
                         champion_names)  # fmt: skip
    import pyarrow.parquet as pq

    columns = pq.ParquetFile(path).schema_arrow.names
    y = pd.read_parquet(path, columns=[label])[label].astype(int).to_numpy()
    if not len(y):
        return GateData(y, columns, None, None, engine.gather_rows(cluster, path, y, names))
    usable = champion is not None and all(n in columns for n in champion_names)
    models, inputs = [candidate, champion] if usable else [candidate], [names, champion_names]
    scores = engine.file_scores(cluster, path, models, inputs[: len(models)], partition_rows)
    batch = engine.gather_rows(cluster, path, pandas_sample(len(y), min(len(y), 1000), 0), names)
    return GateData(y, columns, scores[0], scores[1] if usable else None, batch)


def gate(name: str, value: Any, threshold: Any, ok: bool | None, detail: str = "") -> dict:
    verdict = INFO if ok is None else (PASS if ok else FAIL)
    return {"gate": name, "value": value, "threshold": threshold, "verdict": verdict,
            "detail": detail}  # fmt: skip


def contract_differences(candidate: dict, champion: dict) -> list[str]:
    """Feature names and kinds that differ between two feature contracts."""
    a = {f["name"]: f["kind"] for f in candidate["features"]}
    b = {f["name"]: f["kind"] for f in champion["features"]}
    diffs = [f"+{n}" for n in sorted(set(a) - set(b))] + [f"-{n}" for n in sorted(set(b) - set(a))]
    diffs += [f"{n}: {b[n]}->{a[n]}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    return diffs


def batch_latency_ms(model: Any, x: pd.DataFrame, rows: int = 1000, repeats: int = 5) -> float:
    """Median wall time of predict_proba on a 1 000-row batch."""
    batch = x.sample(n=rows, replace=len(x) < rows, random_state=0)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_proba(batch)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.median(timings))


def evaluate_gates(
    candidate: Candidate,
    champion: dict | None,
    champion_model: Any | None,
    test: pd.DataFrame | GateData,
    later: pd.DataFrame | GateData,
    drift: dict | None,
    rolled_back: set[str],
    p: PromoteParams,
    threshold: float,
) -> tuple[list[dict], float]:
    """Every gate with value, threshold and verdict; also the measured latency (ms).
    `test`, `later`: the test split and the next labelled month (no rows without one)."""
    names = feature_names({"features": candidate.contract["features"]})
    champ = champ_names(champion, names)
    test, later = (gate_data(split, candidate.contract["label"], candidate.model, names,
                             champion_model, champ) if isinstance(split, pd.DataFrame) else split
                   for split in (test, later))  # fmt: skip
    y, scores = test.y, test.candidate
    m = candidate.metrics
    gates = [
        gate("quality_floor_roc_auc", m["roc_auc"], p.min_roc_auc, m["roc_auc"] >= p.min_roc_auc),
        gate("quality_floor_pr_auc", m["pr_auc"], p.min_pr_auc, m["pr_auc"] >= p.min_pr_auc),
    ]
    if champion is None:
        gates.append(gate("non_regression", None, p.margin, True, "no champion yet"))
    else:
        cand_value = compute_metrics(y, scores, threshold, 0)[p.metric]
        lacking = [n for n in champ if n not in test.columns]
        if test.champion is not None:
            champ_value = compute_metrics(y, test.champion, threshold, 0)[p.metric]
            basis = "both scored on this test set"
        else:
            champ_value = (champion.get("metrics") or {}).get(p.metric)
            basis = ("champion artifact absent: its recorded metric" if not lacking else
                     f"the champion cannot score this data (it needs {lacking[:3]}): its "
                     "recorded metric; another dataset belongs in its own lineage "
                     "(promote.model_name)")  # fmt: skip
        if champ_value is None:
            gates.append(
                gate("non_regression", None, p.margin, False, f"champion has no {p.metric}")
            )
        else:
            delta = cand_value - champ_value
            detail = f"{p.metric} {cand_value:.4f} vs champion {champ_value:.4f}; {basis}"
            ok = delta >= p.margin
            gates.append(gate("non_regression", round(delta, 6), p.margin, ok, detail))
    gates += out_of_time_gates(candidate, later, p, threshold)
    if champion is None or not _features(champion):
        gates.append(gate("feature_contract", [], None, True, "no champion contract to match"))
    else:
        diffs = contract_differences(candidate.contract, {"features": _features(champion)})
        ok = not diffs or p.allow_contract_change
        detail = "allowed by promote.allow_contract_change" if diffs and ok else ""
        gates.append(gate("feature_contract", diffs, "identical names and kinds", ok, detail))
    # calibration: the ceiling, or twice what chance alone gives a calibrated model on
    # this many test rows, whichever is higher
    ece = expected_calibration_error(y, scores)
    ceiling = round(max(p.max_ece, 2 * ece_noise_floor(scores)), 6)
    gates.append(gate("calibration_ece", round(ece, 6), ceiling, ece <= ceiling,
                      f"expected calibration error, 10 quantile bins, {len(y)} test rows; "
                      f"promote.max_ece {p.max_ece:g} or 2x the noise floor"))  # fmt: skip
    bad = int((~np.isfinite(scores) | (scores < 0) | (scores > 1)).sum())
    gates.append(gate("sanity_scores", bad, 0, bad == 0, "NaN or outside [0, 1]"))
    rate = float((scores >= threshold).mean())
    band = [p.min_positive_rate, p.max_positive_rate]
    gates.append(gate("sanity_positive_rate", round(rate, 6), band, band[0] <= rate <= band[1]))
    # Measured, so informational only: a verdict that depends on the CPU's load would make
    # the same inputs promote on a quiet machine and skip on a busy one.
    latency = batch_latency_ms(candidate.model, test.batch)
    detail = ("1 000-row batch, one thread; informational (a timing is not a function of the "
              "inputs): the measured value goes to registry/<name>/history.jsonl")  # fmt: skip
    gates.append(gate("sanity_latency", None, p.latency_budget_ms, None, detail))
    if latency > p.latency_budget_ms:
        log.warning("1 000-row batch took %.0f ms, over promote.latency_budget_ms=%s "
                    "(informational)", latency, p.latency_budget_ms)  # fmt: skip
    gates.append(gate("not_rolled_back", candidate.sha256 in rolled_back, False,
                      candidate.sha256 not in rolled_back,
                      "a model rolled back from is not promoted again"))  # fmt: skip
    if drift is not None:
        context = {k: drift.get(k) for k in ("current_as_of", "drift_share", "retrain_recommended")}
        gates.append(gate("drift_context", context, drift.get("threshold"), None))
    return gates, latency


def champ_names(champion: dict | None, fallback: list[str]) -> list[str]:
    """The champion's input columns (its contract's; `fallback` when it records none)."""
    return feature_names({"features": _features(champion or {})}) or fallback


def out_of_time_gates(
    candidate: Candidate, later: GateData, p: PromoteParams, threshold: float
) -> list[dict]:
    """Next month's labels, the number to trust: the candidate's ROC AUC on the first
    labelled month after its training snapshot against a floor, and against the champion's
    on the same rows. Without such a month there is nothing to check (informational)."""
    as_of = (candidate.metrics.get("oot") or {}).get("as_of")
    y = later.y
    if not len(y) or as_of is None or len(np.unique(y)) < 2:
        return [gate("out_of_time_roc_auc", None, p.min_oot_roc_auc, None,
                     "no later month with both outcomes labelled: nothing to check")]  # fmt: skip
    value = compute_metrics(y, later.candidate, threshold, 0)
    cand = value["roc_auc"]
    where = f"next month {as_of}, {len(y)} users"
    if p.min_oot_roc_auc is None:
        gates = [gate("out_of_time_roc_auc", cand, None, None,
                      f"{where}; no floor: promote.min_oot_roc_auc is null")]  # fmt: skip
    else:
        gates = [gate("out_of_time_roc_auc", cand, p.min_oot_roc_auc, cand >= p.min_oot_roc_auc,
                      f"{where}; promote.min_oot_roc_auc")]  # fmt: skip
    if later.champion is None:
        return gates
    champ = compute_metrics(y, later.champion, threshold, 0)["roc_auc"]
    delta = round(cand - champ, 6)
    gates.append(gate("out_of_time_vs_champion", delta, -p.max_oot_drop, delta >= -p.max_oot_drop,
                      f"roc_auc {cand:.4f} vs champion {champ:.4f} on {where}; "
                      "promote.max_oot_drop"))  # fmt: skip
    return gates


def render_markdown(report: dict) -> str:
    """The decision as a Markdown table (for PR comments and humans)."""
    lines = [
        f"### Promotion: {report.get('decision')} ({report.get('mode')})",
        "",
        "| gate | value | threshold | verdict |",
        "|---|---|---|---|",
    ]
    for g in report.get("gates", []):
        verdict = {"pass": "✅ pass", "fail": "❌ fail"}.get(g["verdict"], g["verdict"])
        lines.append(f"| {g['gate']} | {json.dumps(g['value'])} | "
                     f"{json.dumps(g['threshold'])} | {verdict} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: dict, reports_dir: Path) -> None:
    write_json(reports_dir / "promotion.json", report)
    atomic_write_text(reports_dir / "promotion.md", render_markdown(report))


def write_served(registry_dir: Path, reports_dir: Path) -> dict:
    """reports/served.json: the lineage's champion once promote has decided (`score`'s
    dep; a promotion or a rollback changes it, a skip does not)."""
    champion = registry.read_champion(registry_dir)
    keys = ("model_name", "version", "sha256", "as_of")
    served = {"champion": None if champion is None else {k: champion.get(k) for k in keys}}
    write_json(reports_dir / "served.json", served)
    return served


def note_rollback(entry: dict, reports_dir: Path = REPORTS_DIR) -> None:
    """Say in promotion.md that the champion was rolled back. The file is a DVC out of
    promote, so the change makes the next `dvc repro` run promote and decide again."""
    path = reports_dir / "promotion.md"
    if path.exists():
        atomic_write_text(path, path.read_text() + f"\n_Rolled back to version "
                          f"{entry['version']} ({entry['reason']}); `dvc repro` decides "
                          "again._\n")  # fmt: skip


def _features(entry: dict) -> list[dict]:
    return entry.get("features") or []


def _report(candidate: Candidate, champion: dict | None, gates: list[dict], mode: str) -> dict:
    failed = [g["gate"] for g in gates if g["verdict"] == FAIL]
    return round_floats(
        {
            "mode": mode,
            "decision": "skip" if failed else "promote",
            "passed": not failed,
            "failed_gates": failed,
            "candidate": {
                "sha256": candidate.sha256,
                "as_of": candidate.contract["as_of"],
                "model": candidate.contract["model"],
                "roc_auc": candidate.metrics["roc_auc"],
                "pr_auc": candidate.metrics["pr_auc"],
            },
            "champion_before": None
            if champion is None
            else {k: champion.get(k) for k in ("version", "sha256", "as_of")},
            "gates": gates,
        }
    )


def _mode(dry_run: bool) -> str:
    if os.environ.get("DVC_EXP_NAME"):
        return "experiment"
    return "dry_run" if dry_run else "apply"


def load_candidate(models_dir: Path, reports_dir: Path) -> Candidate:
    model_path = models_dir / MODEL_FILE
    require(model_path, models_dir / CONTRACT_FILE, reports_dir / "metrics.json")
    return Candidate(
        model=modelfile.load(model_path),
        sha256=sha256_file(model_path),
        contract=read_json(models_dir / CONTRACT_FILE),
        metrics=read_json(reports_dir / "metrics.json"),
    )


def _champion_model(champion: dict) -> tuple[Any | None, str | None]:
    """The champion's Pipeline, or None and why its bytes cannot be used (absent, not the
    recorded sha256, not a skops file, untrusted types)."""
    try:
        return modelfile.load(registry.verified_artifact(champion)), None
    except ChurnError as exc:
        return None, str(exc)


def run(
    params: Params,
    dry_run: bool = False,
    prepared_dir: Path = PREPARED_DIR,
    models_dir: Path = MODELS_DIR,
    reports_dir: Path = REPORTS_DIR,
    registry_dir: Path | None = None,
    repair: bool = False,
) -> dict:
    """Decide on the candidate (promote, skip, or already the champion) and, in apply
    mode, move the champion. Deciding against a champion whose bytes cannot be used is
    refused in apply mode unless `repair` (then its recorded metrics stand in for it)."""
    p = params.promote
    mode = _mode(dry_run)
    if registry_dir is None:  # this model name's lineage: never another dataset's champion
        registry_dir = registry.lineage_dir(p.model_name)
    candidate = load_candidate(models_dir, reports_dir)
    champion = registry.read_champion(registry_dir)

    if champion is not None and champion["sha256"] == candidate.sha256:
        log.info("candidate %s… is already the champion (version %s)",
                 candidate.sha256[:12], champion["version"])  # fmt: skip
        stale = unserved_threshold(candidate, champion)
        if mode == "apply":
            publish_store(params, prepared_dir, registry_dir)
            _restore(params, candidate, champion, models_dir, registry_dir)
            registry.publish_online(prepared_dir, registry_dir)
            _compile_for_serving(candidate, prepared_dir)
        report = champion.get("decision") or {
            "mode": mode,
            "decision": "already_champion",
            "candidate": {"sha256": candidate.sha256},
        }
        if stale is not None:
            log.warning("%s", stale["why"])
            report = {**report, "threshold_not_served": stale}
        write_report(report, reports_dir)
        write_served(registry_dir, reports_dir)
        return report

    drift_path = reports_dir / "drift.json"
    drift = read_json(drift_path) if drift_path.exists() else None
    history = registry.read_history(registry_dir)
    rolled_back = {r["rolled_back_sha256"] for r in history if r.get("rolled_back_sha256")}
    champion_model, unusable = _champion_model(champion) if champion else (None, None)
    if unusable is not None:
        if mode == "apply" and not repair:
            raise ChurnError(
                f"refusing to decide against champion version {champion['version']}: "
                f"{unusable}. Bring its bytes back (`dvc repro` at the commit that promoted "
                "it restores them), move away with `churn rollback`, or run `churn promote "
                "--repair` to decide against its recorded metrics"
            )
        log.warning("%s; deciding against its recorded metrics", unusable)
    names = feature_names({"features": candidate.contract["features"]})
    champ = champ_names(champion, names)
    label = candidate.contract["label"]
    with engine.maybe_client(params) as cluster:  # the splits scored on workers (dask)
        test, later = (gate_data_of_file(cluster, prepared_dir / name, label, candidate.model,
                                         names, champion_model, champ,
                                         params.dask.partition_rows)
                       for name in ("test.parquet", "oot.parquet"))  # fmt: skip
    gates, latency = evaluate_gates(candidate, champion, champion_model, test, later, drift,
                                    rolled_back, p,
                                    float(candidate.contract["threshold"]))  # fmt: skip
    report = _report(candidate, champion, gates, mode)
    write_report(report, reports_dir)
    verdicts = ", ".join(f"{g['gate']}={g['verdict']}" for g in gates)
    log.info("decision: %s (%s)", report["decision"], verdicts)
    if mode != "apply":
        log.info("%s: registry and aliases left untouched", mode.replace("_", " "))
        write_served(registry_dir, reports_dir)
        return report
    publish_store(params, prepared_dir, registry_dir)  # first: a failure moves no champion
    _apply(params, candidate, champion, report, latency, models_dir, registry_dir, prepared_dir)
    registry.publish_online(prepared_dir, registry_dir)
    write_served(registry_dir, reports_dir)
    return report


def publish_store(params: Params, prepared_dir: Path, registry_dir: Path) -> dict | None:
    """With serve.online_store: postgres, load this month's online table into the lineage's
    versioned table in CHURN_ONLINE_DSN (churn.online); None for the file store, which
    registry.publish_online serves."""
    if params.serve.online_store != "postgres":
        return None
    dsn = online.dsn_from_env("serve.online_store: postgres")
    return publish_online_table(prepared_dir, registry_dir.name, dsn)


def publish_online_table(
    prepared_dir: Path, lineage: str, dsn: str, features: Path | None = None,
    as_of: str | None = None,
) -> dict:  # fmt: skip
    """Load prepare's online table (or `features`, dated `as_of`) into PostgreSQL for the
    lineage: promote's publish and `churn publish`."""
    if features is None:
        features = prepared_dir / registry.ONLINE_FILES[0]
        spec = prepared_dir / "features.json"
        if as_of is None and spec.exists():
            as_of = read_json(spec).get("online_as_of")
    if not features.is_file():
        raise ChurnError(f"{features}: no such file (run `dvc repro` or pass --features)")
    return online.publish_postgres(features, lineage, as_of, dsn)


def unserved_threshold(candidate: Candidate, champion: dict) -> dict | None:
    """When the candidate is the champion's model with another threshold (train.threshold
    or the decision params changed, e.g. a measured save rate): the champion keeps serving
    the threshold it was promoted with (its version's contract), said instead of silent.
    None when they agree or the champion's contract is not here to compare."""
    path = registry.contract_file(champion)
    if not path.exists():
        return None
    served, chosen = float(read_json(path)["threshold"]), float(candidate.contract["threshold"])
    if served == chosen:
        return None
    return {"served": served, "candidate": chosen,
            "why": f"the candidate is version {champion['version']}'s model with threshold "
                   f"{chosen:g} (models/feature_contract.json); version {champion['version']} "
                   f"keeps serving its promoted threshold {served:g}: a new threshold reaches "
                   "the API and the call list with the next promoted model version"}  # fmt: skip


def _compile_for_serving(candidate: Candidate, prepared_dir: Path) -> str | None:
    """compiled.json beside the stored model (a linear one), so that no `churn serve` of it
    needs sklearn, not even the first (churn.fastpath); its sha256, which the champion
    records (serving uses no other bytes), or None for a model without one."""
    path = prepared_dir / registry.ONLINE_FILES[0]
    users = pq.ParquetFile(path).metadata.num_rows
    # fastpath.check_sample's rows, read a row group at a time
    sample = engine.gather_rows(
        None, path, pandas_sample(users, min(users, fastpath.CHECK_ROWS), 0)
    )
    payload = fastpath.compiled_for(candidate.model, sample, candidate.sha256)
    if payload is None:
        return None
    path = registry.store_path(candidate.sha256).parent / fastpath.COMPILED_FILE
    fastpath.write_compiled(path, payload)
    log.info("wrote %s: `churn serve` starts without sklearn", path)
    return fastpath.compiled_sha256(path)


def _register(
    params: Params, candidate: Candidate, models_dir: Path, at_least: int
) -> tuple[str, str | None]:
    """Store the bytes and find or register their version (numbered `at_least` or higher);
    the version and the MLflow run."""
    registry.store_artifacts(models_dir / MODEL_FILE, models_dir / CONTRACT_FILE)
    run_id = tracking.find_run_by_model_sha(params.mlflow.experiment, candidate.sha256)
    version = registry.version_for_sha(params.promote.model_name, candidate.sha256, run_id,
                                       at_least)  # fmt: skip
    return version, run_id


def _restore(
    params: Params, candidate: Candidate, champion: dict, models_dir: Path, registry_dir: Path
) -> None:
    """A fresh clone rebuilt the champion's bytes: put them back in the local registry."""
    name = params.promote.model_name
    with registry.locked(registry_dir):
        # the committed number: a clone's fresh store would otherwise call version 2 "1"
        version, run_id = _register(params, candidate, models_dir, int(champion["version"]))
        # a clone's evaluate is up to date from git (its outs are committed), so the clone's
        # train run got no metrics: give it the committed ones
        if run_id is not None and not tracking.run_summary(run_id)["metrics"]:
            numeric = {k: v for k, v in candidate.metrics.items() if isinstance(v, int | float)}
            tracking.log_metrics(run_id, numeric, [])
        if tracking.alias_version(name, registry.CHAMPION) != version:
            tracking.set_alias(name, registry.CHAMPION, version)
            log.info("restored champion version %s (sha256 %s…) into %s as run %s",
                     version, candidate.sha256[:12], tracking.tracking_uri(), run_id)  # fmt: skip
        registry.record_local_run(candidate.sha256, run_id)


def _apply(
    params: Params,
    candidate: Candidate,
    champion: dict | None,
    report: dict,
    latency: float,
    models_dir: Path,
    registry_dir: Path,
    prepared_dir: Path,
) -> None:
    name = params.promote.model_name
    with registry.locked(registry_dir):
        now_champion = registry.read_champion(registry_dir)
        if (now_champion or {}).get("sha256") != (champion or {}).get("sha256"):
            raise ChurnError("the champion changed while promote was deciding; run it again")
        version, run_id = _register(params, candidate, models_dir,
                                    registry.next_version(registry_dir))  # fmt: skip
        record = {
            "model_name": name,
            "version_before": None if champion is None else champion["version"],
            "sha256_before": None if champion is None else champion["sha256"],
            "sha256": candidate.sha256,
            "gates": {g["gate"]: [g["value"], g["verdict"]] for g in report["gates"]},
            "latency_ms_1000_rows": round(latency, 3),
            "latency_over_budget": latency > params.promote.latency_budget_ms,
        }
        if report["passed"]:
            reason = "first champion" if champion is None else "passed every gate"
            metrics = {k: v for k, v in candidate.metrics.items() if isinstance(v, int | float)}
            entry = registry.entry_for(
                name=name, version=version, run_id=str(run_id), sha256=candidate.sha256,
                reason=reason, decision=report, previous=champion, metrics=metrics,
            )  # fmt: skip
            entry["compiled_sha256"] = _compile_for_serving(candidate, prepared_dir)
            registry.move_champion(entry, {"action": "promote", **record, "version_after": version,
                                           "compiled_sha256": entry["compiled_sha256"],
                                           "reason": reason}, registry_dir)  # fmt: skip
            log.info("promoted version %s to '%s'", version, registry.CHAMPION)
        else:
            tracking.set_alias(name, registry.CHALLENGER, version)
            reason = "failed gates: " + ", ".join(report["failed_gates"])
            registry.append_history({"action": "skip", **record, "version_after":
                                     record["version_before"], "challenger": version,
                                     "reason": reason}, registry_dir)  # fmt: skip
            log.info("champion unchanged; version %s is '%s' (%s)", version,
                     registry.CHALLENGER, reason)  # fmt: skip
