# The MLflow server image plus the PostgreSQL driver (the official image has none).
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg[binary]==3.3.9"
