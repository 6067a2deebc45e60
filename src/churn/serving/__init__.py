"""The prediction API: a FastAPI app factory that serves the registry's champion.

Startup reads registry/<name>/champion.json, checks the artifact's sha256, loads the model and
its feature contract and the online feature table (the newest snapshot). It depends on
the registry and feature contracts only, and imports no MLflow when the artifact is a
local file. A missing or inconsistent registry does not crash the process: /ready says
503 with the reason, and POST /admin/reload (or polling) picks up a fixed registry.
"""

from churn.serving.app import create_app
from churn.serving.settings import Settings

__all__ = ["Settings", "create_app"]
