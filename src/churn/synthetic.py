"""Seeded generator of StreamFlow snapshots in the six-table course layout.

Marginals follow the course data (../shared/data/streamflow): Telco-like tenure,
contracts and fees, empty plan_stream_* for users without internet, a constant
avg_session_mins_7d. Labels come from a hidden logistic model; from
`drift_from_month` on, usage and fees drift and the label model changes
(churn follows payments, tickets and watch hours instead of contract and tenure),
as in the course's month_001.

A retention offer has a true effect (`offer_effect`): `offer_outcome` turns a contacted
would-be churner into a stayer with that probability, from its own seeded stream, so a
simulated campaign (churn.campaign) has a known answer and the snapshots' bytes do not
depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.params import SyntheticParams
from churn.schema import ID, LABEL

CONSTANT_SESSION_MINS = 29.14104464084511  # the course data's constant column
TARGET_POSITIVE_RATE = 0.265
LABEL_SIGNAL = 1.5  # scales the hidden logit: higher means labels are easier to predict
OFFER_STREAM = 7  # entropy word of the offer-outcome draws (the snapshots use spawn keys)


def month_ends(start: str, n_months: int) -> list[str]:
    """Consecutive month-end dates starting at the month of `start`."""
    first = pd.Timestamp(start).to_period("M")
    return [(first + i).to_timestamp(how="end").date().isoformat() for i in range(n_months)]


@dataclass(frozen=True)
class _Population:
    ids: np.ndarray
    gender: np.ndarray
    senior: np.ndarray
    family: np.ndarray
    dependents: np.ndarray
    tenure0: np.ndarray
    net: np.ndarray
    contract: np.ndarray
    paperless: np.ndarray
    tv: np.ndarray
    movies: np.ndarray
    base_fee: np.ndarray
    engagement: np.ndarray
    signup: np.ndarray


def _population(p: SyntheticParams, rng: np.random.Generator) -> _Population:
    n = p.n_users
    width = max(7, len(str(n)))
    ids = np.array([f"SF-{i:0{width}d}" for i in range(1, n + 1)], dtype=object)
    gender = _levels("Male", "Female")[np.where(rng.random(n) < 0.5, 0, 1)]
    senior = rng.random(n) < 0.16
    family = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(family, 0.5, 0.1)
    # Telco tenure is U-shaped: many new users, many long-standing ones.
    mix = rng.random(n)
    tenure0 = np.where(
        mix < 0.3,
        rng.integers(0, 13, n),
        np.where(mix < 0.5, rng.integers(60, 73, n), rng.integers(0, 73, n)),
    )
    net = rng.choice(np.array(["DSL", "Fiber optic", "No"], dtype=object), n, p=[0.34, 0.44, 0.22])
    p_m2m = np.clip(0.85 - 0.0095 * tenure0, 0.1, 0.9)
    p_two = (1 - p_m2m) * (0.3 + 0.5 * tenure0 / 72)
    u = rng.random(n)
    contract = _levels("Month-to-month", "Two year", "One year")[
        np.where(u < p_m2m, 0, np.where(u < p_m2m + p_two, 1, 2))
    ]
    paperless = rng.random(n) < 0.59
    has_net = net != "No"
    p_stream = np.where(net == "Fiber optic", 0.6, 0.42)
    tv = np.where(has_net, rng.random(n) < p_stream, False)
    movies = np.where(has_net, rng.random(n) < p_stream, False)
    base = np.select([net == "Fiber optic", net == "DSL"], [70.0, 45.0], 20.0)
    base_fee = np.clip(
        base + has_net * (10.0 * tv + 10.0 * movies + rng.normal(0, 6, n)) + rng.normal(0, 1.5, n),
        18.25,
        None,
    )
    engagement = rng.normal(0, 1, n)
    start = pd.Timestamp(p.start)
    days_back = np.round(tenure0 * 30.44 + rng.integers(0, 28, n)).astype("int64")
    back, row_back = np.unique(days_back, return_inverse=True)  # ~2 200 distinct dates
    signup = (start - pd.to_timedelta(back, unit="D")).strftime("%Y-%m-%d").to_numpy()[row_back]
    return _Population(
        ids, gender, senior, family, dependents, tenure0, net, contract, paperless,
        tv, movies, base_fee, engagement, signup.astype(object),
    )  # fmt: skip


def _levels(*names: str) -> np.ndarray:
    """Category levels as an object array to index: every row shares one str per level
    (`np.where(...).astype(object)` makes one str per row: ~60 bytes x 10 M a column)."""
    return np.array(names, dtype=object)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrated(logit: np.ndarray, target: float) -> np.ndarray:
    """Shift the logit so the mean probability equals `target` (bisection, deterministic)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logit + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return _sigmoid(logit + (lo + hi) / 2)


def churn_probability(features: dict[str, np.ndarray], drifted: bool) -> np.ndarray:
    """The hidden label model; the concept changes once drift starts."""
    f = features
    m2m = (f["contract_type"] == "Month-to-month").astype(float)
    two = (f["contract_type"] == "Two year").astype(float)
    fiber = (f["net_service"] == "Fiber optic").astype(float)
    watch = f["watch_hours_30d"] - 30.0
    rebuf = f["rebuffer_events_7d"] - 2.3
    if not drifted:
        logit = (
            1.5 * m2m - 1.1 * two - 0.035 * f["months_active"] + 0.8 * fiber
            + 0.012 * (f["monthly_fee"] - 65) + 0.9 * f["failed_payments_90d"]
            + 0.45 * f["support_tickets_90d"] - 0.07 * watch + 0.12 * rebuf
            + 0.35 * f["user_is_senior"] + 0.3 * f["paperless_billing"]
            - 0.3 * f["has_dependents"]
        )  # fmt: skip
    else:
        logit = (
            0.5 * m2m - 0.4 * two - 0.01 * f["months_active"] + 0.2 * fiber
            + 1.6 * f["failed_payments_90d"] + 0.9 * f["support_tickets_90d"]
            - 0.15 * watch + 0.35 * rebuf + 0.1 * f["user_is_senior"]
        )  # fmt: skip
    return _calibrated(LABEL_SIGNAL * logit, TARGET_POSITIVE_RATE)


def _month(
    pop: _Population, month: int, drifted: bool, rng: np.random.Generator
) -> dict[str, pd.DataFrame]:
    n = len(pop.ids)
    has_net = pop.net != "No"
    months_active = pop.tenure0 + month
    fee = pop.base_fee * (1.08 if drifted else 1.0)
    monthly_fee = np.round(fee, 2)
    total_paid = np.round(
        np.where(months_active == 0, 0.0, monthly_fee * months_active * rng.uniform(0.93, 1.07, n)),
        2,
    )
    watch = 30 + 5 * pop.engagement + rng.normal(0, 3.5, n) + 3 * pop.tv + 3 * pop.movies
    watch = watch - 1.5 * (~has_net)
    if drifted:
        watch = watch * 0.85
    watch = np.clip(watch, 0.5, None)
    rebuffer = rng.poisson(2.1 + 0.5 * (pop.net == "DSL"), n)
    if drifted:
        rebuffer = rebuffer + (rng.random(n) < 0.3) * rng.poisson(1.8, n)
    skips = rng.poisson(np.clip(5 - 0.6 * pop.engagement, 0.5, None), n)
    failed = rng.poisson(
        (0.12 + 0.08 * pop.paperless + 0.05 * (pop.contract == "Month-to-month"))
        * (1.4 if drifted else 1.0),
        n,
    )
    tickets = rng.poisson(0.3 + 0.12 * (pop.net == "Fiber optic") + 0.1 * (pop.engagement < -1), n)
    resolution = np.round(np.clip(rng.normal(10, 3.9, n), 1.0, 24.9), 1)
    devices = rng.integers(1, 4, n)

    features = {
        "contract_type": pop.contract,
        "net_service": pop.net,
        "months_active": months_active,
        "monthly_fee": monthly_fee,
        "failed_payments_90d": failed,
        "support_tickets_90d": tickets,
        "watch_hours_30d": watch,
        "rebuffer_events_7d": rebuffer,
        "user_is_senior": pop.senior,
        "paperless_billing": pop.paperless,
        "has_dependents": pop.dependents,
    }
    label = rng.random(n) < churn_probability(features, drifted)

    def stream(flag: np.ndarray) -> pd.Series:
        return pd.Series(flag, dtype="boolean").mask(~has_net)

    return {
        "users": pd.DataFrame(
            {
                ID: pop.ids,
                "signup_date": pop.signup,
                "user_gender": pop.gender,
                "user_is_senior": pop.senior,
                "has_family": pop.family,
                "has_dependents": pop.dependents,
            }
        ),
        "subscriptions": pd.DataFrame(
            {
                ID: pop.ids,
                "months_active": months_active.astype("int64"),
                "plan_stream_tv": stream(pop.tv),
                "plan_stream_movies": stream(pop.movies),
                "contract_type": pop.contract,
                "paperless_billing": pop.paperless,
                "monthly_fee": monthly_fee,
                "total_paid": total_paid,
                "net_service": pop.net,
            }
        ),
        "usage_agg_30d": pd.DataFrame(
            {
                ID: pop.ids,
                "watch_hours_30d": np.round(watch, 4),
                "avg_session_mins_7d": np.full(n, CONSTANT_SESSION_MINS),
                "unique_devices_30d": devices.astype("int64"),
                "skips_7d": skips.astype("int64"),
                "rebuffer_events_7d": rebuffer.astype("int64"),
            }
        ),
        "payments_agg_90d": pd.DataFrame({ID: pop.ids, "failed_payments_90d": failed}),
        "support_agg_90d": pd.DataFrame(
            {
                ID: pop.ids,
                "support_tickets_90d": tickets.astype("int64"),
                "ticket_avg_resolution_hrs_90d": resolution,
            }
        ),
        "labels": pd.DataFrame({ID: pop.ids, LABEL: label}),
    }


def generate(p: SyntheticParams) -> Iterator[tuple[str, dict[str, pd.DataFrame]]]:
    """Yield (as_of, tables) month by month; the same params give the same frames."""
    seeds = np.random.SeedSequence(p.seed).spawn(p.n_months + 1)
    pop = _population(p, np.random.default_rng(seeds[0]))
    for month, as_of in enumerate(month_ends(p.start, p.n_months)):
        drifted = month >= p.drift_from_month
        yield as_of, _month(pop, month, drifted, np.random.default_rng(seeds[month + 1]))


def offer_outcome(
    p: SyntheticParams, as_of: str, ids: np.ndarray, churned: np.ndarray, contacted: np.ndarray
) -> np.ndarray:
    """The month's churn labels had the `contacted` users been offered the deal: each
    contacted churner stays with probability `p.offer_effect`. One uniform draw per
    generated user and month, by the user's position in the population, so the outcome
    of a user does not depend on who else was contacted or on the row order."""
    months = month_ends(p.start, p.n_months)
    if as_of not in months:
        raise ValueError(f"{as_of} is not a generated month ({months[0]} .. {months[-1]})")
    draws = np.random.default_rng(
        np.random.SeedSequence([p.seed, OFFER_STREAM, months.index(as_of)])
    ).random(p.n_users)
    position = pd.Series(ids).str.slice(3).astype("int64").to_numpy() - 1  # "SF-0000042" -> 41
    saved = np.asarray(contacted, bool) & (draws[position] < p.offer_effect)
    return np.asarray(churned, bool) & ~saved
