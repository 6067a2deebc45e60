# Sourced by the scripts (and by you: `source scripts/env.sh` from anywhere): the project's
# venv first on PATH, telemetry off. The repo root comes from this file's place, not $PWD.
_churn_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export PATH="$_churn_root/.venv/bin:$PATH"
unset _churn_root
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=true
export DVC_NO_ANALYTICS=true
export NO_MKDOCS_2_WARNING=1  # mkdocs-material prints an end-of-life banner on every build
