"""A table of hostile request bodies (issue 20): non-finite numbers, lone surrogates,
too-large integers, deep nesting and broken bytes in every place a body carries a value.
None may answer 500; every answer is JSON naming where the problem is; the server stays up."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from churn.serve import create_app
from tests.api.conftest import settings

# raw JSON-ish texts for one value; Python's json module reads all but the last four
VALUES = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "overflowing_float": "1e400",
    "negative_overflowing_float": "-1e400",
    "integer_of_400_digits": "1" + "0" * 400,
    "lone_high_surrogate": '"\\ud800"',
    "lone_low_surrogate": '"\\udfff"',
    "reversed_surrogate_pair": '"\\udc00\\ud800"',
    "surrogate_inside_text": '"SF-\\ud83d0001"',
    "nan_in_a_list": "[1, NaN]",
    "infinity_in_an_object": '{"a": Infinity}',
    "deep_list": "[" * 5000 + "]" * 5000,
    "deep_object": '{"a": ' * 3000 + "1" + "}" * 3000,
    "truncated": '"SF-000',
    "bare_word": "nope",
}
# where the value goes (the path a 422 names when Python's parser can read the body)
PLACES = {
    "user_id": ("/predict", '{"user_id": %s}', ["user_id"]),
    "features": ("/predict", '{"features": %s}', ["features"]),
    "a_feature": ("/predict", '{"features": {"monthly_fee": %s}}', ["features", "monthly_fee"]),
    "extra_field": ("/predict", '{"user_id": "SF-0000001", "extra": %s}', ["extra"]),
    "user_ids": ("/predict/batch", '{"user_ids": ["SF-0000001", %s]}', ["user_ids", 1]),
    "records": (
        "/predict/batch",
        '{"records": [{"tenure_months": %s}]}',
        ["records", 0, "tenure_months"],
    ),
    "record_list": ("/predict/batch", '{"records": %s}', ["records"]),
}
UNREADABLE = {"deep_list", "deep_object", "truncated", "bare_word"}  # no path to name
CASES = [(p, v) for p in PLACES for v in VALUES]
RAW = {  # whole bodies
    "invalid_utf8": b'{"user_id": "SF-\xff\xfe"}',
    "utf8_bom": b'\xef\xbb\xbf{"user_id": "SF-0000001"}',
    "nul_byte": b'{"user_id": "SF-\x000001"}',
    "lone_surrogate_key": b'{"\\ud800": 1}',
    "nan_key_value": b'{"user_id": "SF-0000001", "\\udfff": NaN}',
    "trailing_garbage": b'{"user_id": "SF-0000001"} x',
    "two_documents": b'{"user_id": "SF-0000001"}{"user_id": "SF-0000002"}',
    "empty": b"",
    "only_whitespace": b"   ",
    "a_number": b"1e999",
    "array_of_nan": b"[NaN, NaN]",
    "utf16_body": '{"user_id": "SF-0000001"}'.encode("utf-16"),
}


@pytest.fixture(scope="module")
def hostile_client(served_dir):
    import os

    old = os.getcwd()
    os.chdir(served_dir)
    try:
        with TestClient(create_app(settings()), raise_server_exceptions=False) as c:
            yield c
    finally:
        os.chdir(old)


def post(client: TestClient, path: str, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_the_table_has_over_a_hundred_cases():
    assert len(CASES) + len(RAW) >= 114


@pytest.mark.parametrize(("place", "value"), CASES)
def test_a_hostile_value_is_a_422_naming_its_path(hostile_client, place, value):
    path, template, where = PLACES[place]
    answer = post(hostile_client, path, (template % VALUES[value]).encode())
    assert answer.status_code == 422, (answer.status_code, answer.text[:300])
    detail = answer.json()["detail"]  # JSON, whatever was sent
    assert detail and all(isinstance(d["msg"], str) for d in detail)
    json.dumps(detail, allow_nan=False).encode("utf-8")  # strict JSON, valid UTF-8
    if value not in UNREADABLE:
        assert detail[0]["loc"][: len(where) + 1] == ["body", *where], detail
    assert all("input" not in d for d in detail) and len(answer.text) < 1000  # no echo
    assert hostile_client.get("/health").status_code == 200


@pytest.mark.parametrize("name", sorted(RAW))
def test_a_hostile_body_is_never_a_server_error(hostile_client, name):
    for path in ("/predict", "/predict/batch", "/admin/reload"):
        answer = post(hostile_client, path, RAW[name])
        assert 200 <= answer.status_code < 500, (name, path, answer.status_code, answer.text[:300])
        answer.json()
    assert hostile_client.get("/health").status_code == 200


def test_nan_in_a_user_id_names_the_field_and_the_rule(hostile_client):
    answer = post(hostile_client, "/predict", b'{"user_id": NaN}')
    assert answer.status_code == 422
    assert answer.json()["detail"] == [
        {"loc": ["body", "user_id"], "msg": "must be finite (no NaN or Infinity)", "type": "finite"}
    ]


def test_a_lone_surrogate_field_name_is_named_escaped(hostile_client):
    answer = post(hostile_client, "/predict", b'{"user_id": "SF-0000001", "\\ud800": 1}')
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "\\ud800"]


def test_validation_errors_do_not_echo_the_input(hostile_client):
    secret = "x" * 5000
    answer = hostile_client.post("/predict", json={"user_id": "SF-0000001", "extra": secret})
    assert answer.status_code == 422
    assert secret not in answer.text and "input" not in answer.json()["detail"][0]
    assert answer.json()["detail"][0]["loc"] == ["body", "extra"]
