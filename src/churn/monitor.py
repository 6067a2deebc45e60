"""monitor: the closed loop — drift → retrain → compare → promote, month by month.

For every snapshot in data/raw newer than the champion's training `as_of`, the
champion is checked against that month (Evidently drift against the champion's own
training snapshot, and its ROC AUC on the month's labels). When drift says retrain,
`as_of` in params.yaml moves to that month and `dvc repro` runs train → evaluate →
drift → promote, whose gates decide whether the champion changes. Every step lands in
reports/monitor/timeline.json, a PNG plot, an HTML report and a markdown summary (the
body of the retrain pull request). Nothing in these files depends on the clock.
"""

from __future__ import annotations

import base64
import html
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from churn import campaign, modelfile, registry
from churn.decision import control_draw, with_rate
from churn.drift import drift_report
from churn.errors import ChurnError
from churn.evaluate import REPORTS_DIR
from churn.ingest import MANIFEST, RAW_DIR
from churn.io import atomic_write_text, read_json, require, write_json
from churn.params import Params, load_params, update_params_file
from churn.prepare import load_snapshot, split
from churn.schema import ID, LABEL

log = logging.getLogger("churn.monitor")

MONITOR_DIR = REPORTS_DIR / "monitor"


@dataclass(frozen=True)
class Month:
    """One month's check of the champion."""

    as_of: str
    champion_version: str
    champion_as_of: str
    drift: dict[str, Any]

    def record(self) -> dict[str, Any]:
        d = self.drift
        concept = d.get("concept_drift") or {}
        return {
            "as_of": self.as_of,
            "champion_version": self.champion_version,
            "champion_as_of": self.champion_as_of,
            "champion_roc_auc": concept.get("auc_current"),
            "champion_test_roc_auc": concept.get("auc_reference_test"),
            "drift_share": d["drift_share"],
            "n_drifted": d["n_drifted"],
            "drifted_columns": d["drifted_columns"],
            "prediction_drift": d["prediction_drift"]["drifted"],
            "label_rate": (d.get("target_drift") or {}).get("current_rate"),
            "retrain_recommended": d["retrain_recommended"],
            "retrain_reasons": d["retrain_reasons"],
        }


def months_after(manifest: dict, as_of: str) -> list[str]:
    """Snapshot dates newer than `as_of`, oldest first (ISO dates sort as text)."""
    return [date for date in manifest["snapshots"] if date > as_of]


def check_month(champion: dict, as_of: str, params: Params, raw_dir: Path = RAW_DIR) -> Month:
    """Drift of one month against the champion's training snapshot, with the champion model."""
    manifest = read_json(raw_dir / MANIFEST)
    reference_as_of = champion["as_of"]
    if reference_as_of not in manifest["snapshots"]:
        raise ChurnError(
            f"{raw_dir / MANIFEST}: the champion's training snapshot {reference_as_of} is not "
            f"ingested (have {manifest['snapshots']}); the reference cannot be rebuilt"
        )
    reference = load_snapshot(raw_dir, manifest, reference_as_of)
    current = load_snapshot(raw_dir, manifest, as_of)
    _, test = split(reference, params.prepare.test_size, params.random_state)
    model = modelfile.load(registry.verified_artifact(champion))
    spec = {
        "id": ID,
        "label": LABEL,
        "features": champion["features"],
        "as_of": reference_as_of,
        "current_as_of": as_of,
    }
    result = drift_report(reference, current, test, model, spec, params.drift, params.random_state)
    return Month(as_of, str(champion["version"]), reference_as_of, result.summary)


def _dvc() -> str:
    found = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    if not Path(found).exists():
        raise ChurnError("dvc not found on PATH (source scripts/env.sh)")
    return found


def retrain(as_of: str, params_path: Path, reports_dir: Path = REPORTS_DIR) -> dict[str, Any]:
    """Move as_of to this month and run `dvc repro`; return what promote decided.

    On a failed repro params.yaml gets its old as_of back and the error names the month.
    """
    before = load_params(params_path).as_of
    update_params_file(params_path, {"as_of": as_of})
    log.info("as_of %s -> %s; dvc repro", before, as_of)
    done = subprocess.run([_dvc(), "repro"], stdout=sys.stderr, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        update_params_file(params_path, {"as_of": before})
        raise ChurnError(f"dvc repro failed for as_of {as_of} (output above); as_of is back at "
                         f"{before}")  # fmt: skip
    promotion = read_json(reports_dir / "promotion.json")
    metrics = read_json(reports_dir / "metrics.json")
    return {
        "decision": promotion.get("decision"),
        "failed_gates": promotion.get("failed_gates", []),
        "candidate_roc_auc": metrics.get("roc_auc"),
        "candidate_sha256": (promotion.get("candidate") or {}).get("sha256"),
    }


def run(
    params_path: Path = Path("params.yaml"),
    dry_run: bool = False,
    raw_dir: Path = RAW_DIR,
    out_dir: Path = MONITOR_DIR,
    registry_dir: Path | None = None,
    reports_dir: Path = REPORTS_DIR,
) -> dict[str, Any]:
    require(raw_dir / MANIFEST)
    params = load_params(params_path)
    if registry_dir is None:
        registry_dir = registry.lineage_dir(params.promote.model_name)
    champion = registry.read_champion(registry_dir)
    if champion is None:
        raise ChurnError(f"no champion in {registry_dir / registry.CHAMPION_FILE}: run "
                         "`dvc repro` first")  # fmt: skip
    start = {"version": str(champion["version"]), "as_of": champion["as_of"]}
    months = months_after(read_json(raw_dir / MANIFEST), start["as_of"])
    log.info("champion version %s (as_of %s); newer snapshots: %s",
             start["version"], start["as_of"], ", ".join(months) or "none")  # fmt: skip
    steps: list[dict[str, Any]] = []
    simulate = params.ingest.source == "synthetic" and not dry_run
    lineage = params.promote.model_name
    for index, as_of in enumerate(months, start=1):
        month = check_month(champion, as_of, params, raw_dir)
        step = month.record()
        if simulate:  # the month's call list, worked: what did the offer do?
            step["campaign"] = simulated_campaign(champion, as_of, params, raw_dir)
            campaign.record(lineage, step["campaign"])
            campaign.say(step["campaign"])
        log.info("[%d/%d] %s: champion v%s AUC %s, drift share %.2f, retrain %s",
                 index, len(months), as_of, month.champion_version, step["champion_roc_auc"],
                 step["drift_share"], step["retrain_recommended"])  # fmt: skip
        if not step["retrain_recommended"]:
            step["action"] = "keep"
        elif dry_run:
            step["action"] = "would_retrain"
        else:
            step["action"] = "retrain"
            step["retrain"] = retrain(as_of, params_path)
            champion = registry.read_champion(registry_dir) or champion
            step["retrain"]["champion_version_after"] = str(champion["version"])
            log.info("[%d/%d] %s: promote decided %s", index, len(months), as_of,
                     step["retrain"]["decision"])  # fmt: skip
        steps.append(step)
    timeline = {
        "dry_run": dry_run,
        "start_champion": start,
        "end_champion": {"version": str(champion["version"]), "as_of": champion["as_of"]},
        "drift_threshold": params.drift.threshold,
        "max_auc_drop": params.drift.max_auc_drop,
        "months_checked": len(steps),
        "retrains": sum(1 for s in steps if s["action"] == "retrain"),
        "promotions": sum(1 for s in steps if s.get("retrain", {}).get("decision") == "promote"),
        "steps": steps,
    }
    if simulate and steps:
        history = campaign.read_ledger(lineage)
        timeline["campaign"] = campaign.pooled([s["campaign"] for s in steps])
        timeline["campaign"]["true_save_rate"] = params.ingest.synthetic.offer_effect
        campaign.write_outputs(campaign.campaign_report(lineage, steps[-1]["campaign"], history,
                                                        params.decision), reports_dir)  # fmt: skip
        # the measurements are the next months' input (decide): bring the pipeline up to date
        log.info("campaigns recorded in %s; dvc repro", campaign.ledger_path(lineage))
        if subprocess.run(
            [_dvc(), "repro"], stdout=sys.stderr, stderr=subprocess.STDOUT
        ).returncode:
            raise ChurnError("dvc repro after recording the campaigns failed (output above)")
    if not dry_run:
        write_outputs(timeline, out_dir)
    return timeline


def simulated_campaign(champion: dict, as_of: str, params: Params, raw_dir: Path = RAW_DIR) -> dict:
    """The champion scores the month (with its control group) and the synthetic source
    decides, with its true offer effect, which contacted churners stay: the measurement."""
    from churn.score import score_users

    frame = load_snapshot(raw_dir, read_json(raw_dir / MANIFEST), as_of)
    rate, _ = campaign.resolved_save_rate(params.decision, params.promote.model_name, as_of)
    params = with_rate(params, rate)
    model = modelfile.load(registry.verified_artifact(champion))
    contract = read_json(registry.contract_file(champion))
    draw = control_draw(frame[ID], as_of, params.random_state, params.decision.control_share)
    scored = score_users(model, contract, frame, ID, params.decision, reasons=False,
                         control_draw=draw).table  # fmt: skip
    measured = campaign.month_campaign(scored, frame, params, as_of, simulate=True)
    measured["champion"] = {
        "model_name": params.promote.model_name,
        "version": str(champion["version"]),
        "sha256": champion["sha256"],
    }
    measured["threshold"] = float(contract["threshold"])
    return measured


# --- reports ---------------------------------------------------------------------------


def summary_markdown(timeline: dict[str, Any]) -> str:
    """The timeline as markdown: the retrain pull request's body."""
    start, end = timeline["start_champion"], timeline["end_champion"]
    outcome = f"{timeline['retrains']} retrain(s), {timeline['promotions']} promotion(s)"
    if timeline["dry_run"]:
        outcome = "dry run, nothing changed"
    lines = [
        f"### Monitor: {outcome}",
        "",
        f"Champion v{start['version']} (as_of {start['as_of']}) → "
        f"v{end['version']} (as_of {end['as_of']}); {timeline['months_checked']} month(s) checked; "
        f"retrain when drift share ≥ {timeline['drift_threshold']} or AUC drop > "
        f"{timeline['max_auc_drop']}.",
        "",
        "| month | champion | its ROC AUC | drift share | drifted | retrain? | action | decision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in timeline["steps"]:
        auc = "—" if s["champion_roc_auc"] is None else f"{s['champion_roc_auc']:.3f}"
        r = s.get("retrain") or {}
        decision = r.get("decision", "")
        if decision:
            decision += f" (candidate AUC {r['candidate_roc_auc']:.3f}"
            decision += f", now v{r['champion_version_after']})"
        drifted = ", ".join(s["drifted_columns"]) or "—"
        recommended = "yes" if s["retrain_recommended"] else "no"
        lines.append(
            f"| {s['as_of']} | v{s['champion_version']} | {auc} | {s['drift_share']:.2f} | "
            f"{drifted} | {recommended} | {s['action']} | {decision or '—'} |"
        )
    lines += campaign_lines(timeline)
    if timeline["promotions"]:
        lines += ["", "A person approves this promotion by merging the pull request."]
    return "\n".join(lines) + "\n"


def campaign_lines(timeline: dict[str, Any]) -> list[str]:
    """Each month's campaign: called vs control, the measured save rate (markdown)."""
    pool = timeline.get("campaign")
    if not pool:
        return []
    lines = ["", f"#### Retention offer: called vs control (simulated; true save rate "
             f"{pool['true_save_rate']:g})", "",
             "| month | called | churned | control | churned | save rate (95 % interval) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for s in timeline["steps"]:
        c = s["campaign"]
        rate = (
            "not measurable"
            if c["save_rate"] is None
            else (f"{c['save_rate']:.3f} ({c['save_rate_low']:.3f} to {c['save_rate_high']:.3f})")
        )
        lines.append(f"| {s['as_of']} | {c['contacted']} | {c['contacted_churned']} | "
                     f"{c['control']} | {c['control_churned']} | {rate} |")  # fmt: skip
    lines.append(f"| all months | {pool['contacted']} | {pool['contacted_churned']} | "
                 f"{pool['control']} | {pool['control_churned']} | **{pool['save_rate']:.3f} "
                 f"({pool['save_rate_low']:.3f} to {pool['save_rate_high']:.3f})** |")  # fmt: skip
    return lines


def plot_timeline(timeline: dict[str, Any], path: Path) -> None:
    """Per month: the champion's ROC AUC on that month's labels, drift share, decisions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = timeline["steps"]
    months = [s["as_of"] for s in steps]
    x = list(range(len(steps)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    aucs = [s["champion_roc_auc"] for s in steps]
    top.plot(x, aucs, "o-", color="#1f77b4", label="champion ROC AUC on the month's labels")
    top.plot(x, [s["champion_test_roc_auc"] for s in steps], ":", color="#7f7f7f",
             label="champion ROC AUC on its own test set")  # fmt: skip
    for i, s in enumerate(steps):
        top.annotate(f"v{s['champion_version']}", (i, aucs[i] or 0), textcoords="offset points",
                     xytext=(0, 8), ha="center", fontsize=8)  # fmt: skip
        r = s.get("retrain")
        if r:
            promoted = r["decision"] == "promote"
            top.plot(i, r["candidate_roc_auc"], "^" if promoted else "x", markersize=11,
                     color="#2ca02c" if promoted else "#d62728",
                     label=f"retrained ({'promoted' if promoted else 'skipped'}): candidate's "
                     "test AUC")  # fmt: skip
            top.axvline(i, color="#2ca02c" if promoted else "#d62728", alpha=0.2)
        elif s["action"] == "would_retrain":
            top.axvline(i, color="#ff7f0e", alpha=0.3, linestyle="--")
    handles, labels = top.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    top.legend(unique.values(), unique.keys(), loc="lower left", fontsize=8)
    top.set_ylabel("ROC AUC")
    top.set_title("Champion per month: quality, drift and promotions")
    shares = [s["drift_share"] for s in steps]
    colors = ["#d62728" if s["retrain_recommended"] else "#9467bd" for s in steps]
    bottom.bar(x, shares, color=colors)
    bottom.axhline(timeline["drift_threshold"], color="black", linestyle="--", linewidth=1,
                   label=f"threshold {timeline['drift_threshold']}")  # fmt: skip
    bottom.set_ylabel("drifted feature share")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper left", fontsize=8)
    bottom.set_xticks(x, months, rotation=0, fontsize=8)
    bottom.set_xlabel("snapshot (red bar: retrain recommended)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def html_report(timeline: dict[str, Any], png: bytes) -> str:
    """A self-contained page: the plot inline and the table of steps."""
    rows = []
    for s in timeline["steps"]:
        r = s.get("retrain") or {}
        cells = [s["as_of"], f"v{s['champion_version']}", s["champion_roc_auc"],
                 s["drift_share"], ", ".join(s["drifted_columns"]) or "—",
                 "; ".join(s["retrain_reasons"]) or "—", s["action"],
                 r.get("decision", "—"), r.get("candidate_roc_auc", "—")]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    image = base64.b64encode(png).decode()
    head = ["month", "champion", "its ROC AUC", "drift share", "drifted columns", "reasons",
            "action", "decision", "candidate ROC AUC"]  # fmt: skip
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>StreamFlow churn: monitor</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Monitor timeline</h1>
<p>{timeline["months_checked"]} month(s) checked, {timeline["retrains"]} retrain(s),
{timeline["promotions"]} promotion(s). Champion v{timeline["start_champion"]["version"]}
(as_of {timeline["start_champion"]["as_of"]}) → v{timeline["end_champion"]["version"]}
(as_of {timeline["end_champion"]["as_of"]}).</p>
<section id="timeline"><h2>Champion quality, drift and decisions</h2>
<img alt="monitor timeline" src="data:image/png;base64,{image}"></section>
<section id="steps"><h2>Steps</h2><table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{"".join(rows)}</table></section>
<p>Data: <code>reports/monitor/timeline.json</code>. The latest drift report of the
pipeline: <a href="../drift.html">reports/drift.html</a>.</p>
</body></html>
"""


def write_outputs(timeline: dict[str, Any], out_dir: Path = MONITOR_DIR) -> None:
    write_json(out_dir / "timeline.json", timeline)
    atomic_write_text(out_dir / "summary.md", summary_markdown(timeline))
    png = out_dir / "timeline.png"
    plot_timeline(timeline, png)
    atomic_write_text(out_dir / "report.html", html_report(timeline, png.read_bytes()))
    log.info("wrote %s/{timeline.json,timeline.png,report.html,summary.md}", out_dir)


def steps_frame(timeline: dict[str, Any]) -> pd.DataFrame:
    """The steps as a table (for the terminal)."""
    rows = []
    for s in timeline["steps"]:
        r = s.get("retrain") or {}
        rows.append({"month": s["as_of"], "champion": f"v{s['champion_version']}",
                     "auc": s["champion_roc_auc"], "drift_share": s["drift_share"],
                     "retrain?": s["retrain_recommended"], "action": s["action"],
                     "decision": r.get("decision", "")})  # fmt: skip
    return pd.DataFrame(rows)
