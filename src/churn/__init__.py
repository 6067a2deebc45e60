"""StreamFlow churn: a reproducible DVC + MLflow churn-prediction pipeline."""

import os
import platform

__version__ = "0.1.0"

# OpenBLAS picks its kernels by CPU at load time, and kernels round differently: the same
# commit trained logistic regression to other bytes on an AVX-512 Intel (SkylakeX kernels)
# than on an AMD EPYC (Zen). One kernel family on every x86-64 machine with AVX2 makes the
# model's bytes, and so dvc.lock, the machine's no longer. Set before numpy loads OpenBLAS
# (importing churn comes first in every entry point); CHURN_BLAS_CORETYPE=auto opts out.
BLAS_CORETYPE = "Haswell"


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return False
    return set(flags) <= set(line.split())


if (
    os.environ.get("CHURN_BLAS_CORETYPE", BLAS_CORETYPE) != "auto"
    and platform.machine() in ("x86_64", "AMD64")
    and _cpu_has("avx2", "fma")
):
    os.environ["OPENBLAS_CORETYPE"] = os.environ.get("CHURN_BLAS_CORETYPE", BLAS_CORETYPE)
