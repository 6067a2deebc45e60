"""The fitted bytes do not depend on the CPU's BLAS kernels: a logistic regression fitted
with OpenBLAS forced to SSE3 kernels (what an old CPU picks) equals the one fitted with
the kernels this CPU picks. Before the pin in churn/__init__.py the committed model
came out different on an AMD EPYC (Zen kernels) than on the AVX-512 Intel that trained it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import churn

FIT = """
import churn, hashlib, numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = rng.normal(size=(3000, 40))
y = (X @ rng.normal(size=40) + rng.normal(size=3000) > 0).astype(int)
print(hashlib.sha256(LogisticRegression(max_iter=1000).fit(X, y).coef_.tobytes()).hexdigest())
"""


def fitted_hash(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_CORETYPE", "CHURN_BLAS_CORETYPE")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", FIT], env={**clean, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(not churn._cpu_has("avx2", "fma"), reason="kernels pinned on AVX2 CPUs only")
def test_logistic_regression_bytes_do_not_depend_on_the_cpus_blas_kernels():
    assert fitted_hash(OPENBLAS_CORETYPE="Prescott") == fitted_hash()


@pytest.mark.skipif(not churn._cpu_has("avx2", "fma"), reason="kernels pinned on AVX2 CPUs only")
def test_the_pin_can_be_lifted():
    # shows the test above can fail: with the machine's own choice the kernels differ
    lifted = fitted_hash(CHURN_BLAS_CORETYPE="auto", OPENBLAS_CORETYPE="Prescott")
    assert lifted != fitted_hash(CHURN_BLAS_CORETYPE="auto")
