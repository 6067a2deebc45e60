import datetime as dt

import pytest

from churn.errors import ChurnError
from churn.params import load_params, parse_params


def test_defaults_parse_and_pin_the_snapshot():
    params = parse_params({})
    assert params.as_of == "2024-01-31"
    assert params.ingest.source == "synthetic"
    assert params.ingest.synthetic.n_users == 7043
    assert params.train.model == "auto" and params.train.threshold == "auto"
    assert params.train.calibration == "sigmoid"


def test_yaml_date_is_accepted_as_iso_string():
    assert parse_params({"as_of": dt.date(2024, 2, 29)}).as_of == "2024-02-29"


@pytest.mark.parametrize("bad", ["2024-13-01", "31/01/2024", "soon"])
def test_malformed_as_of_names_the_key_and_rule(bad):
    with pytest.raises(ChurnError) as err:
        parse_params({"as_of": bad})
    message = str(err.value)
    assert "as_of" in message and "iso_date" in message and bad in message


def test_unknown_key_is_rejected_with_its_path():
    with pytest.raises(ChurnError, match=r"train\.n_trees"):
        parse_params({"train": {"n_trees": 3}})


def test_out_of_range_value_is_rejected():
    with pytest.raises(ChurnError, match=r"prepare\.test_size"):
        parse_params({"prepare": {"test_size": 1.5}})


def test_repo_params_file_loads(tmp_path):
    from tests.conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    assert params.as_of == "2024-01-31"
    with pytest.raises(ChurnError, match="not found"):
        load_params(tmp_path / "missing.yaml")


@pytest.mark.parametrize("dotted", ["train.cv_max_rows", "train.fit_max_rows", "drift.max_rows"])
def test_sample_sizes_below_1000_rows_are_refused(dotted):
    """A sample of a few rows would decide thresholds, fits and drift on noise."""
    section, key = dotted.split(".")
    with pytest.raises(ChurnError, match=dotted.replace(".", r"\.")):
        parse_params({section: {key: 999}})
    assert getattr(getattr(parse_params({section: {key: 1000}}), section), key) == 1000
