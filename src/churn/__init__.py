"""StreamFlow churn: a reproducible DVC + MLflow churn-prediction pipeline."""

__version__ = "0.1.0"
