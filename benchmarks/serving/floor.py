"""The floor for benchmarks/serving: FastAPI + uvicorn as `churn serve` runs them (same
request models, asyncio loop, no access log), one POST /predict that parses the same
body and answers a constant prediction. What any route costs before a model runs."""

from __future__ import annotations

from fastapi import FastAPI

from churn.serving.validation import PredictRequest

app = FastAPI()
ANSWER = {"user_id": None, "churn_probability": 0.5, "churn": True, "threshold": 0.5,
          "model_version": "0", "model_role": "champion", "as_of": None,
          "request_id": "0" * 32}  # fmt: skip


@app.post("/predict")
async def predict(body: PredictRequest) -> dict:
    return ANSWER
