"""Serving configuration: the environment variables `churn serve` reads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from churn import online, registry
from churn.errors import ChurnError
from churn.runtimes import RUNTIMES

log = logging.getLogger("churn.serve")


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Serving configuration (environment variables in brackets)."""

    # the lineage served: CHURN_REGISTRY_DIR (root, default registry/) / model name
    # (CHURN_MODEL_NAME, else params.yaml's promote.model_name, else streamflow-churn)
    registry_dir: Path = registry.REGISTRY_DIR
    # CHURN_FEATURES; default: what promote published for this registry (mlflow/online/...)
    features_path: Path | None = None
    admin_token: str | None = None  # CHURN_ADMIN_TOKEN: enables POST /admin/reload
    max_batch: int = 1000  # CHURN_MAX_BATCH
    max_body_bytes: int = 2_000_000  # CHURN_MAX_BODY_BYTES
    # (CHURN_MAX_HEADER_BYTES, default 64 KiB, bounds a request's head: churn.serving.protocol)
    canary_fraction: float = 0.0  # CHURN_CANARY_FRACTION: users routed to the challenger
    shadow: bool = False  # CHURN_SHADOW=1: also score the challenger, answer with champion
    poll_seconds: float = 0.0  # CHURN_POLL_SECONDS: reload when the champion changes
    # CHURN_CHAMPION_FROM: "file" (registry/<name>/champion.json, the default) or "alias":
    # the tracking server's `champion` alias, model bytes and online features (team mode:
    # replicas follow a promotion on another machine without a git pull)
    champion_from: str = "file"
    # CHURN_RUN_DIR: shared by the workers of one `churn serve`; a reload in one worker is
    # announced there and every other worker follows before its next answer
    run_dir: Path | None = None
    # CHURN_RUNTIME: what scores a preprocessed row (churn.runtimes): auto (numpy for
    # linear models, treelite for trees, each only when it matches the Pipeline within
    # 1e-9 at load), numpy, treelite, onnx, or sklearn (the exact path)
    runtime: str = "auto"
    # CHURN_ONLINE_STORE (default: params.yaml's serve.online_store, else file): "file" holds
    # the online table in memory; "postgres" looks users up in the table promote published
    # to CHURN_ONLINE_DSN (churn.online), keeping CHURN_ONLINE_CACHE rows (LRU)
    online_store: str = "file"
    online_dsn: str = ""
    online_cache: int = online.CACHE_ROWS

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        features = env.get("CHURN_FEATURES")
        params = _served_params(Path("params.yaml"))
        serve, promote = _section(params, "serve"), _section(params, "promote")
        name = env.get("CHURN_MODEL_NAME") or promote.get("model_name")
        if not isinstance(name, str):
            name = registry.DEFAULT_LINEAGE
        store = env.get("CHURN_ONLINE_STORE") or serve.get("online_store") or "file"
        return cls(
            registry_dir=registry.lineage_dir(
                name, Path(env.get("CHURN_REGISTRY_DIR", "registry"))
            ),
            features_path=Path(features) if features else None,
            admin_token=env.get("CHURN_ADMIN_TOKEN") or None,
            max_batch=int(env.get("CHURN_MAX_BATCH", "1000")),
            max_body_bytes=int(env.get("CHURN_MAX_BODY_BYTES", "2000000")),
            canary_fraction=float(env.get("CHURN_CANARY_FRACTION", "0")),
            shadow=env.get("CHURN_SHADOW", "0").lower() in ("1", "true", "yes"),
            poll_seconds=float(env.get("CHURN_POLL_SECONDS", "0")),
            run_dir=Path(env["CHURN_RUN_DIR"]) if env.get("CHURN_RUN_DIR") else None,
            champion_from=env.get("CHURN_CHAMPION_FROM", "file"),
            runtime=env.get("CHURN_RUNTIME", "auto"),
            online_store=str(store),
            online_dsn=env.get(online.DSN_ENV, ""),
            online_cache=int(env.get(online.CACHE_ENV, str(online.CACHE_ROWS))),
        )

    def __post_init__(self) -> None:
        if self.champion_from not in CHAMPION_SOURCES:
            raise ChurnError(f"CHURN_CHAMPION_FROM={self.champion_from!r}: use one of "
                             f"{', '.join(CHAMPION_SOURCES)}")  # fmt: skip
        if self.runtime not in RUNTIMES:
            raise ChurnError(f"CHURN_RUNTIME={self.runtime!r}: use one of {', '.join(RUNTIMES)}")
        if self.online_store not in online.STORES:
            raise ChurnError(f"CHURN_ONLINE_STORE={self.online_store!r}: use one of "
                             f"{', '.join(online.STORES)}")  # fmt: skip
        if self.online_store == "postgres" and not self.online_dsn:
            online.dsn_from_env("CHURN_ONLINE_STORE=postgres")  # raises, naming the variable
        if self.online_cache < 0:
            raise ChurnError(f"{online.CACHE_ENV}={self.online_cache}: rows, at least 0")


CHAMPION_SOURCES = ("file", "alias")


def _served_params(path: Path) -> dict:
    """The served repo state's params.yaml (promote: the lineage `dvc repro` promoted;
    serve: where its online table lives), {} when absent or unreadable."""
    import yaml

    try:
        params = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        params = None
    return params if isinstance(params, dict) else {}


def _section(params: dict, key: str) -> dict:
    section = params.get(key)
    return section if isinstance(section, dict) else {}
