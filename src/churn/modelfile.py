"""The model file: skops (no pickle), byte-identical for the same fit on any machine.

A pickle runs code when it is loaded, and champion.json arrives by pull request, so the
model is stored with skops and loaded with an explicit list of trusted types: a file that
names anything else is refused, and nothing in it is executed.

skops alone is not reproducible: its zip holds the save time and names arrays after
`id(obj)` (a memory address). `dumps` rewrites the zip with arrays numbered in schema
order and a fixed timestamp. HistGradientBoosting also records the thread count it was
fitted with (`_BinMapper.n_threads`); it is reset to None (= decide at predict time), so
the bytes do not depend on the core count or OMP_NUM_THREADS.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from churn.errors import ChurnError
from churn.io import atomic_write_bytes

MODEL_FILE = "model.skops"
# Beyond skops' own trusted defaults (sklearn estimators, numpy arrays): exactly the types
# this project's three estimators and their calibration need. Anything else is refused.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def estimators(model: Any) -> list[Any]:
    """The Pipeline's final estimator and, when it is calibrated, the models inside."""
    final = getattr(model, "named_steps", {}).get("model", model)
    inner = [final.estimator] if hasattr(final, "calibrated_classifiers_") else []
    inner += [c.estimator for c in getattr(final, "calibrated_classifiers_", [])]
    return [final, *inner]


def normalise(model: Any) -> Any:
    """Drop machine-specific state from a fitted Pipeline (in place; returns it)."""
    for estimator in estimators(model):
        bin_mapper = getattr(estimator, "_bin_mapper", None)
        if bin_mapper is not None:
            bin_mapper.n_threads = None
        params = estimator.get_params(deep=False)
        if "n_jobs" in params and params["n_jobs"] != 1:
            # predicting in thread order changes scores' last bits
            estimator.set_params(n_jobs=1)
    return model


def _renumber(node: Any, files: dict[str, str], ids: dict[int, int]) -> Any:
    """Replace memory addresses (array file names, `__id__` memo keys) by first-seen order."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "file" and isinstance(value, str) and value.endswith(".npy"):
                out[key] = files.setdefault(value, f"{len(files)}.npy")
            elif key == "__id__" and isinstance(value, int):
                out[key] = ids.setdefault(value, len(ids))
            else:
                out[key] = _renumber(value, files, ids)
        return out
    if isinstance(node, list):
        return [_renumber(v, files, ids) for v in node]
    return node


def dumps(model: Any) -> bytes:
    """The model as skops bytes that depend only on the fitted parameters."""
    import skops.io

    normalise(model)
    source = zipfile.ZipFile(io.BytesIO(skops.io.dumps(model)))
    names: dict[str, str] = {}
    schema = _renumber(json.loads(source.read("schema.json")), names, {})
    entries = [(new, source.read(old)) for old, new in sorted(names.items(), key=_order)]
    entries.append(("schema.json", json.dumps(schema, indent=2, sort_keys=True).encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for name, payload in entries:
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            out.writestr(info, payload, compresslevel=6)
    return buffer.getvalue()


def _order(item: tuple[str, str]) -> int:
    return int(item[1].removesuffix(".npy"))


def save(model: Any, path: str | Path) -> None:
    atomic_write_bytes(path, dumps(model))


def loads(data: bytes, where: str) -> Any:
    """Load skops bytes with the trusted-type list; refuse anything else, naming it."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ChurnError(f"{where}: refused to load: {exc}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ChurnError(
            f"{where}: not a skops model file ({type(exc).__name__}); refused to load"
        ) from None


# What a logistic-regression Pipeline's skops schema names (the models a compiled.json
# serves): types and skops node loaders. plainly_trusted checks a file against these
# without importing sklearn; anything else goes to skops.io.loads and its trust check.
PLAIN_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.slice", "builtins.str", "builtins.tuple",
    "numpy.dtype", "numpy.float64", "numpy.ndarray",
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.feature_selection._variance_threshold.VarianceThreshold",
    "sklearn.impute._base.MissingIndicator", "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.model_selection._split.StratifiedKFold", "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler", "sklearn.preprocessing._encoders.OneHotEncoder",
})  # fmt: skip
PLAIN_LOADERS = frozenset({"DTypeNode", "DictNode", "JsonNode", "ListNode", "NdArrayNode",
                           "ObjectNode", "SliceNode", "TupleNode", "TypeNode"})  # fmt: skip


def plainly_trusted(data: bytes) -> bool:
    """Whether `data` is a skops zip whose schema names only PLAIN_TYPES through
    PLAIN_LOADERS (no function, method or reduce node): then nothing in it could run code
    even if loaded. False (a pickle, another estimator, anything unknown) means: let skops
    load it with the trusted-type list, which refuses what is not trusted."""
    from churn import guarded
    from churn.errors import RegistryError

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = guarded.parse(archive.read("schema.json"), "schema.json", max_depth=64)
    except (zipfile.BadZipFile, KeyError, RegistryError):
        return False
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and f"{node.get('__module__')}.{node['__class__']}" \
                    not in PLAIN_TYPES:  # fmt: skip
                return False
            if "__loader__" in node and node["__loader__"] not in PLAIN_LOADERS:
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def load(path: str | Path) -> Any:
    path = Path(path)
    return loads(path.read_bytes(), str(path))
