"""The typed diff every contract check relies on, and the report's verdict and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openenv_gym.testing.validate.results import CheckResult, Report
from openenv_gym.testing.validate.rollout import difference


@pytest.mark.parametrize(
    ("expected", "actual", "words"),
    [
        (np.zeros(2, np.float32), np.zeros(2, np.float64), "float32"),
        (np.zeros(2), np.ones(2), "expected [0. 0.]"),
        (np.zeros(2), [0.0, 0.0], "(list)"),
        (True, np.bool_(True), "got np.True_ (numpy.bool"),
        (1, 1.0, "(float)"),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, "keys"),
        ({"a": {"b": np.int64(1)}}, {"a": {"b": np.int32(1)}}, "value['a']['b']"),
        ((1, "x"), (1, "y"), "value[1]"),
    ],
)
def test_difference_tells_type_value_and_where(
    expected: object, actual: object, words: str
) -> None:
    found = difference(expected, actual)
    assert found is not None and words in found


def test_difference_accepts_equal_values_and_nan() -> None:
    value = {"obs": np.array([np.nan, 1.0]), "t": (np.int64(3), "s"), "ok": True}
    same = {"obs": np.array([np.nan, 1.0]), "t": (np.int64(3), "s"), "ok": True}
    assert difference(value, same) is None


def test_report_exit_code_counts_protocol_and_contract_failures_only() -> None:
    report = Report("CartPole-v1", results=[CheckResult("quality.reward", "fail", "x")])
    assert report.exit_code == 0
    report.results.append(CheckResult("contract.flags_bool", "fail", "env 0 step 1"))
    assert report.exit_code == 1
    data = json.loads(json.dumps(report.to_json()))
    assert data["checks"][1] == {
        "check": "contract.flags_bool",
        "status": "fail",
        "detail": "env 0 step 1",
        "figures": {},
    }
    report.unreachable = "cannot reach ws://127.0.0.1:1"
    assert report.exit_code == 2
