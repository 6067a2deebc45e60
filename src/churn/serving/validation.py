"""Request bodies and the checks of a feature record against the feature contract
(each refusal a 422 naming the field and the rule)."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from fastapi import HTTPException
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from churn.validate import read_cell

log = logging.getLogger("churn.serve")


# --- request models ------------------------------------------------------------------


def _id_text(value: Any) -> Any:
    """A whole-number id as the text ingest stored it (a table's integer ids are read as
    strings: 15634602 -> "15634602"); anything else is left for str's own check."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


UserId = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=128)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: UserId | None = None
    features: dict[str, Any] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> PredictRequest:
        if (self.user_id is None) == (self.features is None):
            raise ValueError("send exactly one of user_id or features")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: list[UserId] | None = None
    records: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> BatchRequest:
        if (self.user_ids is None) == (self.records is None):
            raise ValueError("send exactly one of user_ids or records")
        return self


class Reason(BaseModel):
    column: str = Field(description="the data's column (one-hot levels summed back to it)")
    value: Any = Field(description="the user's value of that column (null: missing)")
    contribution: float = Field(description="signed share of the score: > 0 raises the risk")
    text: str = Field(description='e.g. "monthly_fee 19.99 → raises risk"')


class Explanation(BaseModel):
    output: str = Field(
        description="what `score` is, before calibration: log-odds (logistic regression, "
        "boosting) or probability (forest)"
    )
    score: float = Field(description="the model's score of this row before calibration")
    base: float = Field(description="the score before any column's contribution")
    reasons: list[Reason] = Field(description="the largest contributions, largest first")
    rest: float = Field(
        description="the other columns' contributions: base + reasons + rest = score"
    )


class Prediction(BaseModel):
    user_id: str | None
    churn_probability: float
    churn: bool
    threshold: float
    model_version: str
    model_role: str
    as_of: str | None
    request_id: str
    explanation: Explanation | None = Field(None, description="with ?explain=true only")


# --- input validation against the feature contract -----------------------------------


def _invalid(field_path: list[Any], message: str, rule: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", *field_path], "msg": message,
                                       "type": rule}])  # fmt: skip


def validate_record(record: dict[str, Any], contract: dict, where: list[Any]) -> dict[str, Any]:
    """Check one feature record against the contract; 422 names the first bad field.

    Policy: every feature is required (null only where training saw nulls); numbers must
    be finite and within the observed training range widened by its span on both sides
    (so [min - span, max + span]); categories must be ones seen in training; booleans are
    true/false or 0/1. Unknown fields are refused.
    """
    features = {f["name"]: f for f in contract["features"]}
    unknown = sorted(set(record) - set(features))
    if unknown:
        raise _invalid([*where, unknown[0]], f"unknown feature(s) {unknown[:5]}", "unknown")
    missing = [n for n in features if n not in record]
    if missing:
        raise _invalid([*where, missing[0]], f"missing feature(s) {missing[:5]}", "missing")
    clean: dict[str, Any] = {}
    for name, spec in features.items():
        value = record[name]
        loc = [*where, name]
        if isinstance(value, str):  # a CSV's own words: read as ingest reads that column
            value, readable = read_cell(value, spec["kind"])
            if not readable:
                wanted = "yes/no, true/false or 1/0" if spec["kind"] == "bool" else "a number"
                raise _invalid(loc, f"expected {wanted}, got {record[name]!r}", "type")
        if value is None:
            if not spec.get("nullable"):
                raise _invalid(loc, "must not be null", "not_null")
            clean[name] = None
            continue
        kind = spec["kind"]
        if kind == "category":
            if not isinstance(value, str):
                raise _invalid(loc, "expected a string category", "type")
            open_levels = spec.get("unseen_levels") == "infrequent"  # a capped high-cardinality one
            if not open_levels and value not in spec["categories"]:
                raise _invalid(loc, f"unknown category; allowed {spec['categories']}", "category")
            clean[name] = value
            continue
        if kind == "bool":
            if isinstance(value, bool) or value in (0, 1):
                clean[name] = float(value)
                continue
            raise _invalid(loc, "expected true/false, yes/no or 1/0", "type")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(loc, "expected a number", "type")
        try:
            value = float(value)  # an int of 400 digits does not fit a float
        except OverflowError:
            raise _invalid(loc, "too large for a number", "range") from None
        if not math.isfinite(value):
            raise _invalid(loc, "must be finite (no NaN or infinity)", "finite")
        if value < 0 and spec.get("non_negative"):
            raise _invalid(loc, "must not be negative (it never was in training)", "non_negative")
        lo, hi = spec.get("min"), spec.get("max")
        if lo is not None and hi is not None:
            span = max(hi - lo, 1.0)
            if not lo - span <= value <= hi + span:
                raise _invalid(loc, f"out of range [{lo - span:g}, {hi + span:g}] "
                                    f"(training saw [{lo:g}, {hi:g}])", "range")  # fmt: skip
        clean[name] = float(value)
    return clean
