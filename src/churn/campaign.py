"""campaign: does the offer work? Churn among the users a campaign called vs its control group.

`churn score` marks a seeded `decision.control_share` of the users over the threshold as
`control`: they are left out of the call list, and nothing else tells them apart from the
users called. Once the scored month's outcomes are known, the difference in churn between
the two groups is the offer's effect:

    save rate = 1 - churn rate(contacted) / churn rate(control)

with a 95 % interval (the log risk ratio's normal interval), and the money it implies
(users saved x their value - offers x cost). Each measurement is recorded in
campaigns/<lineage>.json — committed, outside the DVC outputs, because it is what later
months decide with — and shown in reports/campaign.json and reports/campaign.png.

`decision.save_rate: measured` takes the last measurement of a month *before* the one
being scored (a month's own measurement was made with its own call list: feeding it back
would move the list it measured) when its interval is narrower than
`decision.max_save_rate_interval`, and `decision.assumed_save_rate` otherwise; every
report that uses it says which.

Who was contacted: a `--contacts` file (the ids the company called that month) when
given; the synthetic source simulates the call list being worked (its generator's true
`offer_effect` decides who stays, so the measurement has a known answer); other data
without a contacts file is assumed to have worked the call list, and the report says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from churn import registry
from churn.decision import DECISION_FILE, customer_values, fixed_save_rate
from churn.errors import ChurnError, DataValidationError
from churn.ingest import MANIFEST, RAW_DIR
from churn.io import REPORTS_DIR, atomic_write_bytes, read_json, require, round_floats, write_json
from churn.params import DecisionParams, IsoDate, Params
from churn.schema import ID, LABEL, LABEL_TABLE

log = logging.getLogger("churn.campaign")

CAMPAIGNS_DIR = Path("campaigns")
Z95 = 1.959963984540054


# --- the measurement -------------------------------------------------------------------


def measure(churned: np.ndarray, contacted: np.ndarray, control: np.ndarray,
            values: np.ndarray, p: DecisionParams) -> dict:  # fmt: skip
    """Churn among the contacted vs the control users, the save rate with its 95 %
    interval, the users it saved and the campaign's net value (estimate, low, high)."""
    churned = np.asarray(churned, bool)
    n1, n0 = int(contacted.sum()), int(control.sum())
    c1, c0 = int(churned[contacted].sum()), int(churned[control].sum())
    out: dict[str, Any] = {
        "contacted": n1, "contacted_churned": c1, "control": n0, "control_churned": c0,
        "churn_rate_contacted": c1 / n1 if n1 else None,
        "churn_rate_control": c0 / n0 if n0 else None,
    }  # fmt: skip
    if min(n1, n0, c1, c0) == 0:
        empty = [name for name, n in (("contacted users", n1), ("control users", n0),
                                      ("churners among the contacted", c1),
                                      ("churners in the control group", c0)) if n == 0]  # fmt: skip
        why = f"no {' and no '.join(empty)}: the save rate is not measurable"
        out.update(save_rate=None, save_rate_low=None, save_rate_high=None, why_not=why)
        return out
    r1, r0 = c1 / n1, c0 / n0
    log_rr = math.log(r1 / r0)
    se = math.sqrt(1 / c1 - 1 / n1 + 1 / c0 - 1 / n0)
    low_rr, high_rr = math.exp(log_rr - Z95 * se), math.exp(log_rr + Z95 * se)
    # users the offer kept: (churn rate without it - with it) x the contacted
    diff_se = math.sqrt(r0 * (1 - r0) / n0 + r1 * (1 - r1) / n1)
    mean_value = float(np.mean(values[contacted]))
    saved = [(r0 - r1) * n1, (r0 - r1 - Z95 * diff_se) * n1, (r0 - r1 + Z95 * diff_se) * n1]
    out.update(
        save_rate=1 - r1 / r0,
        save_rate_low=1 - high_rr,
        save_rate_high=1 - low_rr,
        saved_users=dict(zip(("estimate", "low", "high"), saved, strict=True)),
        mean_value_of_a_contacted_user=mean_value,
        offer_cost=p.offer_cost,
        net_value=dict(zip(("estimate", "low", "high"),
                           (s * mean_value - n1 * p.offer_cost for s in saved), strict=True)),
    )  # fmt: skip
    return out


def pooled(records: list[dict]) -> dict | None:
    """All recorded months as one campaign (counts added up): a narrower interval when the
    offer's effect stays the same from month to month. None without a measurable month."""
    usable = [r for r in records if r.get("save_rate") is not None]
    if not usable:
        return None
    n1, c1, n0, c0 = (sum(r[k] for r in usable) for k in
                      ("contacted", "contacted_churned", "control", "control_churned"))  # fmt: skip
    r1, r0 = c1 / n1, c0 / n0
    se = math.sqrt(1 / c1 - 1 / n1 + 1 / c0 - 1 / n0)
    rr = r1 / r0
    return {
        "months": [r["as_of"] for r in usable],
        "contacted": n1, "contacted_churned": c1, "control": n0, "control_churned": c0,
        "save_rate": 1 - rr,
        "save_rate_low": 1 - rr * math.exp(Z95 * se),
        "save_rate_high": 1 - rr * math.exp(-Z95 * se),
    }  # fmt: skip


# --- the ledger: campaigns/<lineage>.json -----------------------------------------------


class Record(BaseModel):
    """One month's measurement as the ledger stores it (a pull request may change it: read
    like a request body)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    as_of: IsoDate
    contacted: int = Field(ge=0)
    contacted_churned: int = Field(ge=0)
    control: int = Field(ge=0)
    control_churned: int = Field(ge=0)
    save_rate: float | None = Field(le=1.0)
    save_rate_low: float | None = Field(le=1.0)
    save_rate_high: float | None = Field(le=1.0)


def ledger_path(lineage: str, root: Path = CAMPAIGNS_DIR) -> Path:
    return root / f"{registry.lineage_dir(lineage).name}.json"  # the name is checked there


def read_ledger(lineage: str, root: Path = CAMPAIGNS_DIR) -> list[dict]:
    """The lineage's measurements, oldest month first ([] when none was recorded)."""
    path = ledger_path(lineage, root)
    if not path.exists():
        return []
    try:
        payload = read_json(path)
        rows = payload["measurements"] if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise ValueError('expected {"measurements": [...]}')
        records = []
        for index, row in enumerate(rows):
            at = f"measurements[{index}]"
            records.append(Record.model_validate(row).model_dump())
    except ValidationError as exc:
        where = "; ".join(f"{at}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                          for e in exc.errors())  # fmt: skip
        raise ChurnError(f"{path}: not a campaign ledger ({where}); fix it or take it back "
                         "from git") from None  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise ChurnError(f"{path}: not a campaign ledger ({exc}); fix it or take it back "
                         "from git") from None  # fmt: skip
    for r in records:
        rate, low, high = r["save_rate"], r["save_rate_low"], r["save_rate_high"]
        if rate is not None and not (low is not None and high is not None and low <= rate <= high):
            raise ChurnError(f"{path}: {r['as_of']}: save_rate {rate} is outside its 95 % "
                             f"interval [{low}, {high}]")  # fmt: skip
    return sorted(records, key=lambda r: r["as_of"])


def record(lineage: str, measurement: dict, root: Path = CAMPAIGNS_DIR) -> list[dict]:
    """Add (or replace) one month's measurement; the file is rewritten atomically."""
    rows = [r for r in read_ledger(lineage, root) if r["as_of"] != measurement["as_of"]]
    rows = sorted([*rows, round_floats(measurement, 6)], key=lambda r: r["as_of"])
    write_json(ledger_path(lineage, root), {"lineage": lineage, "measurements": rows})
    return rows


def resolved_save_rate(p: DecisionParams, lineage: str, before: str,
                       root: Path = CAMPAIGNS_DIR) -> tuple[float, str]:  # fmt: skip
    """The save rate the decisions of month `before` use, and why, in words."""
    fixed = fixed_save_rate(p)
    if fixed is not None:
        return fixed
    return from_measurements(p, read_ledger(lineage, root), before,
                             str(ledger_path(lineage, root)))  # fmt: skip


def from_measurements(p: DecisionParams, records: list[dict], before: str,
                      where: str) -> tuple[float, str]:  # fmt: skip
    """`save_rate: measured`: the last measurement of a month before `before` when its
    interval is narrower than max_save_rate_interval, else assumed_save_rate."""
    earlier = [r for r in records if r["as_of"] < before and r["save_rate"] is not None]
    assumed = f"assumed: decision.assumed_save_rate {p.assumed_save_rate:g}"
    if not earlier:
        return p.assumed_save_rate, f"{assumed} (no measured campaign before {before} in {where})"
    last = earlier[-1]
    width = last["save_rate_high"] - last["save_rate_low"]
    shown = (f"{last['as_of']} campaign: {last['save_rate']:.3f}, 95 % interval "
             f"{last['save_rate_low']:.3f} to {last['save_rate_high']:.3f}")  # fmt: skip
    if width < p.max_save_rate_interval:
        return min(max(last["save_rate"], 0.0), 1.0), f"measured: {shown}"
    return p.assumed_save_rate, (f"{assumed} (the {shown}, is {width:.3f} wide, not narrower "
                                 f"than decision.max_save_rate_interval "
                                 f"{p.max_save_rate_interval:g})")  # fmt: skip


def decide(
    params: Params,
    prepared_dir: Path = Path("data/prepared"),
    decision_file: Path = DECISION_FILE,
    root: Path = CAMPAIGNS_DIR,
) -> dict:
    """The `decide` stage: the save rate the newest month's decisions use (train's
    threshold, evaluate's money, score's expected values), into reports/decision.json. A
    stage of its own so a new measurement reruns train, evaluate and score only when it
    changes the rate they use."""
    require(prepared_dir / "features.json")
    month = read_json(prepared_dir / "features.json")["online_as_of"]
    lineage = params.promote.model_name
    rate, basis = resolved_save_rate(params.decision, lineage, month, root)
    resolved = {"lineage": lineage, "month": month, "save_rate": rate, "basis": basis}
    write_json(decision_file, resolved)
    log.info("save rate for %s: %.4f (%s)", month, rate, basis)
    return resolved


# --- one month's campaign ----------------------------------------------------------------


def require_outcomes(raw_dir: Path, as_of: str) -> None:
    """The month's labels must be ingested before its campaign can be measured."""
    path = raw_dir / as_of / f"{LABEL_TABLE}.parquet"
    if not path.exists():
        raise ChurnError(f"{path}: no outcomes for {as_of} yet; measure the campaign once the "
                         "month's labels are ingested (`dvc repro`)")  # fmt: skip


def read_contacts(path: Path, id_column: str, known: pd.Index) -> np.ndarray:
    """The ids a company called (CSV or parquet with the id column): a boolean mask over
    `known` (the scored users). Ids nobody scored are an error naming a few."""
    if not path.exists():
        raise ChurnError(f"{path}: contacts file not found")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if id_column not in frame.columns:
        raise DataValidationError(str(path), id_column, "column_present",
                                  f"the contacts file needs the id column; has "
                                  f"{list(frame.columns)[:10]}")  # fmt: skip
    ids = pd.Index(frame[id_column].dropna().astype(str).str.strip().unique())
    unknown = ids.difference(known.astype(str))
    if len(unknown):
        raise DataValidationError(str(path), id_column, "known_id",
                                  f"{len(unknown)} id(s) not in the scored month, e.g. "
                                  f"{list(unknown[:3])}")  # fmt: skip
    return known.astype(str).isin(ids)


def month_campaign(
    scored: pd.DataFrame,
    month: pd.DataFrame,
    params: Params,
    as_of: str,
    contacts: np.ndarray | None = None,
    simulate: bool = False,
) -> dict:
    """Measure one scored month: `scored` has the id, `churn` (over the threshold) and
    `control` columns; `month` is the month's snapshot (features and labels by id), which
    gives the outcomes and what keeping each user is worth."""
    from churn.synthetic import offer_outcome

    ids = scored[ID].to_numpy()
    month = month.set_index(ID).reindex(ids)
    y = month[LABEL]
    labelled = y.notna().to_numpy()
    control = scored["control"].to_numpy(bool)
    if contacts is None:
        contacted = scored["churn"].to_numpy(bool) & ~control
        how = "the call list (over the threshold, not control), assumed worked"
    else:
        if (contacts & control).any():
            log.warning("%d control users were contacted: they count as contacted",
                        int((contacts & control).sum()))  # fmt: skip
        contacted, control = contacts, control & ~contacts
        how = "the contacts file"
    y = y.fillna(False).to_numpy(bool)
    out: dict[str, Any] = {"as_of": as_of}
    if simulate:
        synthetic = params.ingest.synthetic
        y = offer_outcome(synthetic, as_of, ids, y, contacted)
        how = (f"simulated: the call list worked, each contacted churner kept with the "
               f"generator's true offer_effect {synthetic.offer_effect:g}")  # fmt: skip
        out["true_save_rate"] = synthetic.offer_effect
    values = customer_values(month, params.decision)
    measured = measure(y[labelled], contacted[labelled], control[labelled], values[labelled],
                       params.decision)  # fmt: skip
    unlabelled = int((~labelled & (contacted | control)).sum())
    return {**out, **measured, "contacts": how, "unlabelled_in_groups": unlabelled,
            "control_share": params.decision.control_share}  # fmt: skip


def scored_month(scored_dir: Path, as_of: str | None) -> tuple[str, Path]:
    files = sorted(scored_dir.glob("*.parquet"))
    if as_of is not None:
        files = [f for f in files if f.stem == as_of]
    if not files:
        raise ChurnError(f"{scored_dir}: no scored month{f' {as_of}' if as_of else ''}; run "
                         "`dvc repro` (or `churn score`) first")  # fmt: skip
    return files[-1].stem, files[-1]


def run(
    params: Params,
    as_of: str | None = None,
    contacts: Path | None = None,
    save: bool = True,
    raw_dir: Path = RAW_DIR,
    scored_dir: Path = Path("data/scored"),
    reports_dir: Path = REPORTS_DIR,
    root: Path = CAMPAIGNS_DIR,
) -> dict:
    """Measure the campaign of one scored month (default: the newest), record it in the
    lineage's ledger and write reports/campaign.json + campaign.png."""
    require(raw_dir / MANIFEST, reports_dir / "scoring.json")
    as_of, path = scored_month(scored_dir, as_of)
    scoring = read_json(reports_dir / "scoring.json")
    if scoring.get("as_of") != as_of or not scoring.get("champion"):
        raise ChurnError(f"{reports_dir / 'scoring.json'} is for {scoring.get('as_of')}, not "
                         f"{as_of}: run `churn score` for the month first")  # fmt: skip
    scored = pd.read_parquet(path)
    if "control" not in scored.columns:
        raise ChurnError(f"{path}: no `control` column (scored before control groups); "
                         "run `churn score` again")  # fmt: skip
    require_outcomes(raw_dir, as_of)
    manifest = read_json(raw_dir / MANIFEST)
    mask = None
    if contacts is not None:
        mask = read_contacts(contacts, ID, pd.Index(scored[ID]))
    simulate = contacts is None and manifest.get("source") == "synthetic" \
        and params.ingest.source == "synthetic"  # fmt: skip
    from churn.prepare import load_snapshot  # here: `churn decide` needs none of it

    month = load_snapshot(raw_dir, manifest, as_of)
    measured = month_campaign(scored, month, params, as_of, mask, simulate)
    measured["champion"] = scoring["champion"]
    measured["threshold"] = scoring["threshold"]
    lineage = params.promote.model_name
    history = record(lineage, measured, root) if save else [measured]
    report = campaign_report(lineage, measured, history, params.decision)
    write_outputs(report, reports_dir)
    say(measured)
    return report


def say(m: dict) -> None:
    if m.get("save_rate") is None:
        log.warning("%s: %s", m["as_of"], m.get("why_not"))
        return
    log.info("%s: churn %.3f among %d contacted vs %.3f among %d control -> save rate %.3f "
             "(95 %% interval %.3f to %.3f)%s", m["as_of"], m["churn_rate_contacted"],
             m["contacted"], m["churn_rate_control"], m["control"], m["save_rate"],
             m["save_rate_low"], m["save_rate_high"],
             f"; true {m['true_save_rate']:g}" if "true_save_rate" in m else "")  # fmt: skip


def campaign_report(lineage: str, latest: dict, history: list[dict], p: DecisionParams) -> dict:
    """reports/campaign.json: the latest month, every recorded month, all months pooled and
    what `save_rate: measured` would use next."""
    rate, basis = from_measurements(p, history, "9999-12-31", f"campaigns/{lineage}.json")
    return round_floats({
        "lineage": lineage,
        "latest": latest,
        "months": history,
        "pooled": pooled(history),
        # what `decision.save_rate: measured` uses for the months after these
        "next_months_save_rate": {"save_rate": rate, "basis": basis},
        "decision": {"save_rate": p.save_rate, "assumed_save_rate": p.assumed_save_rate,
                     "max_save_rate_interval": p.max_save_rate_interval},
    }, 6)  # fmt: skip


def write_outputs(report: dict, reports_dir: Path = REPORTS_DIR) -> None:
    write_json(reports_dir / "campaign.json", report)
    plot(report, reports_dir / "campaign.png")
    log.info("wrote %s/campaign.json and campaign.png", reports_dir)


def plot(report: dict, path: Path) -> None:
    """Per month: the measured save rate with its 95 % interval; all months pooled; the
    assumed rate and, in simulations, the true one."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m for m in report["months"] if m.get("save_rate") is not None]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(months))
    if months:
        rate = np.array([m["save_rate"] for m in months])
        low = rate - np.array([m["save_rate_low"] for m in months])
        high = np.array([m["save_rate_high"] for m in months]) - rate
        ax.errorbar(x, rate, yerr=[low, high], fmt="o", capsize=4, color="#1f77b4",
                    label="measured save rate, 95 % interval")  # fmt: skip
        ax.set_xticks(x, [m["as_of"] for m in months], fontsize=8)
    pool = report.get("pooled")
    if pool and len(months) > 1:
        ax.axhspan(pool["save_rate_low"], pool["save_rate_high"], color="#1f77b4", alpha=0.15,
                   label=f"all months pooled: {pool['save_rate']:.3f}")  # fmt: skip
    assumed = report["decision"]["assumed_save_rate"]
    ax.axhline(assumed, color="#7f7f7f", linestyle=":", label=f"assumed {assumed:g}")
    true = {m["true_save_rate"] for m in months if "true_save_rate" in m}
    if len(true) == 1:
        ax.axhline(true.pop(), color="#2ca02c", linestyle="--", label="true (simulation)")
    ax.set_xlim(-0.6, max(len(months), 1) - 0.4)
    ax.set_ylabel("share of churners the offer kept")
    ax.set_title(f"Retention offer: contacted vs control ({report['lineage']})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
