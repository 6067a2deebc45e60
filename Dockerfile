# The prediction API. Build after `dvc repro` so the image carries the champion:
#   docker build -t streamflow-churn-api .
# The registry (registry/<lineage>/champion.json), the content-addressed model store
# (mlflow/models) and the online features promote published (mlflow/online) are copied in;
# the sha256 in champion.json is checked at startup. The lineage served is
# CHURN_MODEL_NAME (default streamflow-churn: no params.yaml in the image).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /app
RUN useradd --create-home --uid 10001 churn
COPY requirements.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install -r requirements.txt && pip install --no-deps .

COPY registry ./registry
COPY mlflow/models ./mlflow/models
COPY mlflow/online ./mlflow/online
USER churn

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready').status != 200)"
# 0.0.0.0 inside the container only; the compose file publishes it on the host's loopback.
CMD ["churn", "serve", "--host", "0.0.0.0", "--port", "8000"]
