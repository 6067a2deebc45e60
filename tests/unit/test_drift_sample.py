"""drift reads its seeded samples through Arrow; they must be the rows pandas picks."""

import numpy as np
import pandas as pd
import pytest

from churn.drift import _sample, read_sample
from churn.io import write_parquet


@pytest.mark.parametrize("max_rows", [50, 999, 1000, 5000])
def test_read_sample_is_the_pandas_sample_of_the_table(tmp_path, max_rows):
    rng = np.random.default_rng(0)
    plans = rng.choice(np.array(["a", "b", None], dtype=object), 1000)
    frame = pd.DataFrame({"user_id": [f"u{i:04d}" for i in range(1000)],
                          "x": rng.normal(size=1000), "plan": plans})  # fmt: skip
    write_parquet(frame, tmp_path / "t.parquet")
    sampled, n_rows = read_sample(tmp_path / "t.parquet", max_rows, seed=42)
    expected = frame.sample(n=max_rows, random_state=42) if max_rows < 1000 else frame
    assert n_rows == 1000
    pd.testing.assert_frame_equal(sampled, expected)
    pd.testing.assert_frame_equal(_sample(frame, max_rows, 42), expected)
