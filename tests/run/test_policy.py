"""The failure policy (xl_suite.run.policy): the --max-error-rate check, per stage, and failed rows left out of
outputs."""

import pytest

from xl_suite.errors import EXIT_FAILURE_RATE, FailureRateError
from xl_suite.run.policy import check_stage_failure_rates, drop_failed
from xl_suite.runner import check_failure_rate


def test_check_failure_rate_boundaries():
    assert check_failure_rate({}, 0, max_error_rate=0.0) is None
    assert "within --max-error-rate 0.5" in check_failure_rate({"empty": 5}, 10, max_error_rate=0.5)
    with pytest.raises(FailureRateError, match=r"1 of 10 rows failed \(10.0%: error 1\), above --max-error-rate 0"):
        check_failure_rate({"error": 1}, 10, max_error_rate=0.0)
    assert FailureRateError("x").exit_code == EXIT_FAILURE_RATE == 3


def test_the_stage_check_names_every_stage_above_and_passes_within():
    stages = {"a": ({"error": 3}, 10), "b": ({}, 1000), "c": ({"unparsed": 1, "empty": 1}, 10)}
    with pytest.raises(FailureRateError) as err:
        check_stage_failure_rates(stages, max_error_rate=0.1, what="rows")
    assert "a: 3 of 10 rows failed (30.0%: error 3); c: 2 of 10 rows failed (20.0%: empty 1, unparsed 1)" in str(
        err.value
    )
    assert "pass --max-error-rate 0.3 or higher" in str(err.value)
    line = check_stage_failure_rates(stages, max_error_rate=0.3)
    assert line.startswith("a: 3 of 10 rows failed") and "within --max-error-rate 0.3 per stage" in line
    assert check_stage_failure_rates({"a": ({}, 0)}, max_error_rate=0.0) is None


def test_drop_failed_keeps_usable_and_flagged_rows():
    import datasets

    ds = datasets.Dataset.from_dict(
        {"x": list("abcdef"), "s": ["ok", "error", "prompt_truncated", "truncated", "too_long", "unparsed"]}
    )
    kept, failed = drop_failed(ds, ["s", "not_a_column"])
    assert list(kept["x"]) == ["a", "c", "d"] and failed == {"error": 1, "too_long": 1, "unparsed": 1}
    assert drop_failed(ds, ["nope"]) == (ds, {})
