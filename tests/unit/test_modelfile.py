"""The model file: same fit -> same bytes whatever the thread count; nothing but skops."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from churn import modelfile
from churn.errors import ChurnError
from churn.model import build_pipeline, fit_pipeline
from churn.params import TrainParams

SPEC = {"features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
                     {"name": "c", "kind": "category"}]}  # fmt: skip


def frame(n: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 9, n).astype(float),
                      "c": rng.choice(["x", "y", "z"], n)})  # fmt: skip
    y = pd.Series((x["a"] + rng.normal(scale=0.5, size=n) > 0).astype(int))
    return x, y


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("model", ["hist_gb", "random_forest", "logistic_regression"])
def test_the_same_fit_gives_the_same_bytes_with_one_or_two_threads(model, calibration):
    """Isotonic calibration maps the forest's out-of-fold votes; summed by threads in any
    order (n_jobs=-1) they changed the map's last bits, so the sha256, between fits."""
    x, y = frame()
    params = TrainParams(model=model, calibration=calibration)
    digests = set()
    for threads in (1, 2):
        with threadpool_limits(threads):
            fitted = fit_pipeline(build_pipeline(SPEC, params, 0), x, y)
            digests.add(hashlib.sha256(modelfile.dumps(fitted)).hexdigest())
    assert len(digests) == 1


def test_hist_gb_keeps_no_thread_count_and_round_trips():
    x, y = frame()
    fitted = fit_pipeline(build_pipeline(SPEC, TrainParams(model="hist_gb"), 0), x, y)
    boosted = [e for e in modelfile.estimators(fitted) if hasattr(e, "_bin_mapper")]
    assert boosted and all(e._bin_mapper.n_threads is None for e in boosted)  # calibrated too
    data = modelfile.dumps(fitted)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "schema.json" in names and all(n == "schema.json" or n[0].isdigit() for n in names)
    back = modelfile.loads(data, "mem")
    assert np.array_equal(back.predict_proba(x), fitted.predict_proba(x))


def test_a_pickle_is_not_a_model_file(tmp_path):
    import pickle

    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ChurnError, match="not a skops model file"):
        modelfile.load(path)
