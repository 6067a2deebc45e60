"""score: the champion scores every user of the newest snapshot — whom to call this month.

Writes data/scored/<as_of>.parquet (id, calibrated probability, decision, expected value
of an offer, rank, decile, the top three reasons) and reports/scoring.json (counts,
expected churners, expected value of the campaign, the most common first reasons of the
users it contacts) plus a gains table for `dvc plots` (actual churners found when the
month has labels, expected ones always). The champion is the one of this lineage's
registry/<name>/champion.json, loaded from the content store with its sha256 checked.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from churn import engine, modelfile, registry
from churn.decision import control_draw, customer_values, expected_gain, value_basis, with_save_rate
from churn.errors import ChurnError
from churn.evaluate import REPORTS_DIR, lift_table, quantile_bins
from churn.fastpath import check_sample, compile_pipeline
from churn.io import read_json, require, round_floats, write_json, write_parquet
from churn.model import SCORE_BLOCK_ROWS, churn_scores, feature_names
from churn.params import DecisionParams, Params
from churn.prepare import PREPARED_DIR
from churn.reasons import explainer_for, first_reason_names, reason_texts

log = logging.getLogger("churn.score")

SCORED_DIR = Path("data/scored")
COLUMNS = ("churn_probability", "churn", "expected_value", "rank", "decile")


@dataclass(frozen=True)
class Scored:
    table: pd.DataFrame  # one row per user, best first
    report: dict
    gains: list[dict]


@dataclass(frozen=True)
class UserRows:
    """Every user's scored row in the online table's order (rank and decile still to come)
    and the numbers the report is made of. One row's values depend on that row alone: the
    dask engine computes them partition by partition, the local engine on the whole table."""

    table: pd.DataFrame  # id, probability, churn, control, expected value, reason_1..3
    numbers: dict[str, np.ndarray]  # probability, gain, control, firsts?, y? (NaN: unknown)
    reason_names: list[str]
    unexplained: str | None


def user_rows(
    model: Any,
    contract: dict,
    online: pd.DataFrame,
    id_column: str,
    p: DecisionParams,
    labels: pd.Series | None = None,
    reasons: bool = True,
    control_draw: np.ndarray | None = None,
) -> UserRows:
    """Pure: each user's calibrated probability, decision, expected value and top three
    reasons (churn.reasons), in the order of `online`."""
    names = feature_names({"features": contract["features"]})
    lacking = [n for n in names if n not in online.columns]
    if lacking:
        raise ChurnError(f"the champion needs features the newest snapshot lacks: {lacking[:5]}")
    threshold = float(contract["threshold"])
    texts, firsts, reason_names, unexplained = None, None, [], None
    if reasons:
        try:
            probability, texts, firsts, reason_names = scores_and_reasons(model, online, names)
        except ValueError as exc:  # a model shape without reasons: scores all the same
            unexplained = str(exc)
            log.warning("no reasons in the scored file: %s", exc)
    if texts is None:
        probability = churn_scores(model, online, names)
    over = probability >= threshold
    control = over & control_draw if control_draw is not None else np.zeros(len(over), bool)
    gain = np.round(expected_gain(probability, customer_values(online, p), p), 4)
    table = pd.DataFrame(
        {
            id_column: online[id_column].to_numpy(),
            "churn_probability": np.round(probability, 6),
            "churn": over,
            "control": control,
            "expected_value": gain,
        }
    )
    for k, column in enumerate(texts or [], 1):
        table[f"reason_{k}"] = column
    numbers = {"probability": probability, "gain": gain, "control": control}
    if firsts is not None:
        numbers["firsts"] = firsts
    if labels is not None:
        numbers["y"] = labels.reindex(online[id_column]).astype(float).to_numpy()
    return UserRows(table, numbers, reason_names, unexplained)


def ranking(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order of the scored file (by probability, ties by id: the online table is sorted
    by id, so stable everywhere), each user's rank and decile."""
    order = np.argsort(-probability, kind="stable")
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(1, len(order) + 1)
    return order, rank, decile_of(rank, len(rank))


def decile_of(rank: np.ndarray, users: int) -> np.ndarray:
    """The decile (1: the most likely to churn) of each rank among `users` users."""
    return np.minimum((rank - 1) * 10 // max(users, 1) + 1, 10)


def with_ranks(table: pd.DataFrame, rank: np.ndarray, decile: np.ndarray) -> pd.DataFrame:
    """The scored file's columns: rank and decile after the expected value."""
    at = table.columns.get_loc("expected_value") + 1
    table = table.copy()
    table.insert(at, "rank", rank)
    table.insert(at + 1, "decile", decile)
    return table


def summarise(
    numbers: dict[str, np.ndarray], threshold: float, columns: list[str], p: DecisionParams,
    reason_names: list[str], unexplained: str | None,
) -> tuple[dict, list[dict]]:  # fmt: skip
    """scoring.json's numbers and the gains table, from every user's `UserRows.numbers`."""
    probability, gain, control = numbers["probability"], numbers["gain"], numbers["control"]
    call = (probability >= threshold) & ~control
    report = {
        "users": len(probability),
        "threshold": threshold,
        "contacted": int(call.sum()),
        "control": int(control.sum()),
        "expected_churners": float(probability.sum()),
        "expected_churners_contacted": float(probability[call].sum()),
        "expected_value_of_campaign": float(gain[call].sum()),
        "value_of_a_saved_user": value_basis(columns, p),
        "offer_cost": p.offer_cost,
        "save_rate": p.save_rate,
    }
    if "firsts" in numbers:
        report["top_reasons_of_contacted"] = common_reasons(numbers["firsts"][call], reason_names)
    if unexplained is not None:
        report["reasons_unavailable"] = unexplained
    gains = expected_gains(probability)
    if "y" in numbers:
        y = numbers["y"]
        known = ~np.isnan(y)
        actual = lift_table(y[known].astype(int), probability[known])
        for row, real in zip(gains, actual, strict=False):
            row["actual_found_share"] = real["churners_found_share"]
            row["actual_churn_rate"] = real["churn_rate"]
            row["lift"] = real["lift"]
        report["labels"] = {"users": int(known.sum()), "churners": int(y[known].sum())}
    return round_floats(report, 4), gains


def score_users(
    model: Any,
    contract: dict,
    online: pd.DataFrame,
    id_column: str,
    p: DecisionParams,
    labels: pd.Series | None = None,
    reasons: bool = True,
    control_draw: np.ndarray | None = None,
) -> Scored:
    """Pure: every user's calibrated probability, decision, expected value and top three
    reasons (churn.reasons), ranked. `control_draw` (churn.decision.control_draw) marks
    who of the users over the threshold is the control group: not in the call list."""
    rows = user_rows(model, contract, online, id_column, p, labels, reasons, control_draw)
    order, rank, decile = ranking(rows.numbers["probability"])
    table = with_ranks(rows.table, rank, decile).iloc[order].reset_index(drop=True)
    report, gains = summarise(rows.numbers, float(contract["threshold"]), list(online.columns),
                              p, rows.reason_names, rows.unexplained)  # fmt: skip
    return Scored(table, report, gains)


REASONS = 3  # reason_1..3 in the scored file
COMMON_REASONS = 10  # the most common first reasons in scoring.json


def scores_and_reasons(
    model: Any, online: pd.DataFrame, names: list[str]
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, list[str]]:
    """Every user's churn probability, the texts of their top REASONS reasons (reason_1,
    reason_2, reason_3; "" where a user has fewer non-zero contributions), their first
    reason's code and the codes' names ("column raises/lowers risk"), a block of rows at
    a time through one pass of the Pipeline's preprocessing: the probability is the
    Pipeline's final step on those rows, the same operations (and bits) as
    `churn_scores`. ValueError when the model has no reasons."""
    compiled = compile_pipeline(model, check_sample(online))
    if compiled is None:
        raise ValueError("the champion's Pipeline shape is not one churn.fastpath reads")
    explainer = explainer_for(compiled)  # ValueError for an estimator without reasons
    preprocess, final = model[:-1], model[-1]
    probability, blocks = [], []
    for start in range(0, max(len(online), 1), SCORE_BLOCK_ROWS):
        block = online.iloc[start : start + SCORE_BLOCK_ROWS]
        rows = preprocess.transform(block[names])
        probability.append(final.predict_proba(rows)[:, 1])
        _, contributions = explainer.contributions(rows)
        blocks.append(reason_texts(explainer, contributions, block, REASONS)[1:])
    texts = [np.concatenate([b[0][k] for b in blocks]) for k in range(REASONS)]
    firsts = np.concatenate([b[1] for b in blocks])
    return np.concatenate(probability), texts, firsts, first_reason_names(explainer.columns)


def common_reasons(firsts: np.ndarray, names: list[str]) -> list[dict]:
    """The first reasons of the users a campaign contacts (reason_texts' codes; `names`
    names them), by column and direction, most common first: what the team hears most."""
    counts = np.bincount(firsts[firsts >= 0], minlength=len(names))
    rows = sorted(((names[c], int(n)) for c, n in enumerate(counts) if n),
                  key=lambda item: (-item[1], item[0]))  # fmt: skip
    return [{"reason": reason, "users": int(n)} for reason, n in rows[:COMMON_REASONS]]


def expected_gains(probability: np.ndarray, bins: int = 10) -> list[dict]:
    """Deciles by probability: the share of the expected churners (sum of probabilities)
    that calling down to each decile reaches."""
    total = float(probability.sum()) or 1.0
    rows, found, seen = [], 0.0, 0
    for k, chunk in enumerate(quantile_bins(probability, bins, highest_first=True), 1):
        found, seen = found + float(probability[chunk].sum()), seen + len(chunk)
        rows.append({"decile": k, "contacted_share": round(seen / max(len(probability), 1), 4),
                     "expected_found_share": round(found / total, 6)})  # fmt: skip
    return rows


def run(
    params: Params,
    prepared_dir: Path = PREPARED_DIR,
    reports_dir: Path = REPORTS_DIR,
    scored_dir: Path = SCORED_DIR,
    registry_dir: Path | None = None,
) -> dict | None:
    """Score the newest snapshot with the lineage's champion; scoring.json's report, or
    None when there is no champion or no user to score."""
    name = params.promote.model_name
    registry_dir = registry_dir or registry.lineage_dir(name)
    require(prepared_dir / "online_features.parquet", prepared_dir / "features.json")
    spec = read_json(prepared_dir / "features.json")
    as_of = spec["online_as_of"]
    champion = registry.read_champion(registry_dir)
    shutil.rmtree(scored_dir, ignore_errors=True)
    scored_dir.mkdir(parents=True)
    if champion is None:
        # a lineage whose first candidate failed a gate: nothing to score, said plainly
        reason = f"lineage '{name}' has no champion yet (see reports/promotion.md)"
        log.warning("nothing scored: %s", reason)
        write_json(reports_dir / "scoring.json", {"as_of": as_of, "champion": None,
                                                  "reason": reason})  # fmt: skip
        write_json(reports_dir / "scoring_gains.json", {"gains": []})
        return None
    model = modelfile.load(registry.verified_artifact(champion))
    contract = read_json(registry.contract_file(champion))
    labels_path = prepared_dir / "online_labels.parquet"
    labelled = pq.ParquetFile(labels_path).metadata.num_rows if labels_path.exists() else 0
    labels = labels_path if labelled else None  # the newest month's outcomes, when known
    entry = {"model_name": name, "version": champion["version"], "sha256": champion["sha256"]}
    left_out = known_outcomes(spec, labelled, params)
    if left_out is not None:
        log.warning("left out %d users: %s", left_out["users"], left_out["reason"])
    params, basis = with_save_rate(params)
    out = scored_dir / f"{as_of}.parquet"
    log.info("scoring the users of %s with %s version %s", as_of, name, champion["version"])
    online = prepared_dir / "online_features.parquet"
    with engine.maybe_client(params) as cluster:
        if cluster is None:
            result = _score_here(online, out, model, contract, spec, params, labels,
                                 left_out is not None)  # fmt: skip
        else:  # each row group on a worker (churn.engine)
            result = engine.score_file(cluster, online, out, model, contract, spec, params,
                                       labels, left_out is not None)  # fmt: skip
    if result is None:
        write_json(reports_dir / "scoring.json", {"as_of": as_of, "champion": entry,
                                                  "users": 0, "left_out": left_out})  # fmt: skip
        write_json(reports_dir / "scoring_gains.json", {"gains": []})
        return None
    summary, gains = result
    report = {
        "as_of": as_of,
        "champion": entry,
        **summary,
        "save_rate_basis": basis,
        "control_share": params.decision.control_share,
        "left_out": left_out,
        "file": f"{scored_dir.as_posix()}/{as_of}.parquet",
    }
    write_json(reports_dir / "scoring.json", report)
    write_json(reports_dir / "scoring_gains.json", {"gains": gains}, digits=4)
    log.info("%d of %d users to call (over the threshold %s; %d more held out as the control "
             "group); %.0f expected churners; campaign worth %.0f", report["contacted"],
             report["users"], report["threshold"], report["control"],
             report["expected_churners"], report["expected_value_of_campaign"])  # fmt: skip
    return report


def _score_here(
    path: Path, out: Path, model: Any, contract: dict, spec: dict, params: Params,
    labels_path: Path | None, drop_labelled: bool,
) -> tuple[dict, list[dict]] | None:  # fmt: skip
    """The local engine: the whole online table `path` (and its labels, when the month
    has them) in this process; writes `out`."""
    online = pd.read_parquet(path)
    labels = None
    if labels_path is not None:
        frame = pd.read_parquet(labels_path)
        labels = frame.set_index(spec["id"])[spec["label"]].astype(int)
    if drop_labelled:
        online = online[~online[spec["id"]].isin(labels.index)].reset_index(drop=True)
    if online.empty:
        return None
    held_out = control_draw(online[spec["id"]], spec["online_as_of"], params.random_state,
                            params.decision.control_share)  # fmt: skip
    scored = score_users(model, contract, online, spec["id"], params.decision, labels,
                         control_draw=held_out)  # fmt: skip
    write_parquet(scored.table, out)
    return scored.report, scored.gains


def known_outcomes(spec: dict, labelled: int, params: Params) -> dict | None:
    """Who not to rank, and why: when the newest snapshot is the training one (data with one
    snapshot), its labelled users are the ones the model was trained and tested on, whose
    outcome is known; score.known_outcomes ranks them anyway. None: nobody left out."""
    if not labelled or spec["online_as_of"] != spec["as_of"] or params.score.known_outcomes:
        return None
    return {
        "users": labelled,
        "reason": f"their outcome is known: the newest snapshot "
        f"({spec['as_of']}) is the one the model was trained and tested on; add a later "
        "snapshot without labels, or set score.known_outcomes: true to rank them anyway",
    }


def calls(table: pd.DataFrame, top: int) -> pd.DataFrame:
    """The call list: the `top` users most likely to churn, the control group left out."""
    return table[~table["control"]].drop(columns="control").head(top)


def call_list(path: Path, top: int) -> pd.DataFrame:
    """`calls` of a scored file (best first), read a row group at a time until `top` users
    are found: a month of millions of users is never read whole for a call list."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    found: list[pd.DataFrame] = []
    wanted = top
    for index in range(file.metadata.num_row_groups):
        found.append(calls(file.read_row_group(index).to_pandas(), wanted))
        wanted -= len(found[-1])
        if wanted <= 0:
            break
    return pd.concat(found, ignore_index=True) if found else calls(pd.read_parquet(path), top)
