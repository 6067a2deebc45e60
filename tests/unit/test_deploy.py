"""Deployment files: the compose file validates and wires api, mlflow and prometheus."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_wires_the_four_services():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "mlflow", "postgres", "prometheus"}
    # the team topology: MLflow on PostgreSQL, artifacts proxied, each waits for the next
    mlflow = services["mlflow"]
    assert "--backend-store-uri postgresql+psycopg://" in mlflow["command"]
    assert "@postgres:5432/mlflow" in mlflow["command"]
    assert "--artifacts-destination /mlflow/artifacts" in mlflow["command"]
    assert "--default-artifact-root" not in mlflow["command"]  # clients never see paths
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    dockerfile = REPO_ROOT / mlflow["build"]["context"] / mlflow["build"]["dockerfile"]
    assert "psycopg[binary]==" in dockerfile.read_text()
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]  # loopback only on the host
    assert services["api"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    prometheus = yaml.safe_load((REPO_ROOT / "deploy/prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8000"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert 'CMD ["churn", "serve"' in dockerfile and "COPY registry" in dockerfile


@pytest.mark.skipif(compose_command() is None, reason="neither `docker compose` nor docker-compose")
def test_compose_config_is_valid():
    result = subprocess.run([*compose_command(), "config", "-q"], cwd=REPO_ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
