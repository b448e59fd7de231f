"""Tests for xl_suite.evaluation.metrics.

The AlpacaEval tests reproduce the published leaderboard from alpaca_eval's own annotations (third-party data in
../shared/data, read through the ``shared_data`` fixture). Every other expected value is worked out by hand in the
comments next to it, never by calling the code under test.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.metrics import (
    _sklearn_l1_kwargs,
    bootstrap_ci,
    combine_orders,
    length_bias,
    length_controlled_win_rate,
    position_bias,
    win_rate,
)


MODELS = ("claude-2.1", "alpaca-7b")


@pytest.fixture(scope="module")
def alpaca_eval_runs(shared_data) -> dict[str, dict[str, list]]:
    """Per model: raw preferences in [1, 2], model (output_2) and baseline (output_1) lengths in characters."""
    runs = {}
    for model in MODELS:
        path = shared_data / "alpaca_eval" / f"annotations_{model}.json"
        annotations = json.loads(path.read_text(encoding="utf-8"))
        assert {a["generator_2"] for a in annotations} == {model}
        assert {a["generator_1"] for a in annotations} == {"gpt4_1106_preview"}
        runs[model] = {
            "preference": [a["preference"] for a in annotations],
            "model_lengths": [len(a["output_2"]) for a in annotations],
            "reference_lengths": [len(a["output_1"]) for a in annotations],
        }
    return runs


@pytest.fixture(scope="module")
def leaderboard(shared_data) -> dict[str, dict[str, str]]:
    with open(shared_data / "alpaca_eval" / "leaderboard_rows.csv", encoding="utf-8", newline="") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def _probabilities(raw: list[float | None]) -> list[float | None]:
    """AlpacaEval preference in [1, 2] -> P(model beats baseline)."""
    return [None if r is None else r - 1 for r in raw]


# ----------------------------------------------------------------------------------------------------------------
# AlpacaEval reproduction


@pytest.mark.data
@pytest.mark.parametrize("model", MODELS)
def test_win_rate_reproduces_alpaca_eval_leaderboard(model, alpaca_eval_runs, leaderboard):
    raw = alpaca_eval_runs[model]["preference"]
    # The published files have no unparsed judgment; the leaderboard's n_total (805) is every judgment.
    assert None not in raw and len(raw) == 805
    row = leaderboard[model]

    out = win_rate(_probabilities(raw))

    assert out["win_rate"] == pytest.approx(float(row["win_rate"]), rel=0, abs=1e-9)
    assert out["standard_error"] == pytest.approx(float(row["standard_error"]), rel=0, abs=1e-9)
    assert out["discrete_win_rate"] == pytest.approx(float(row["discrete_win_rate"]), rel=0, abs=1e-9)
    assert out["n_wins"] == int(row["n_wins"])
    assert out["n_losses"] == int(row["n_wins_base"])
    assert out["n_draws"] == int(row["n_draws"])
    assert out["n_total"] == int(row["n_total"])
    assert out["n_unparsed"] == 0


@pytest.mark.data
@pytest.mark.parametrize("model", MODELS)
def test_leaderboard_draws_are_exact_one_point_five(model, alpaca_eval_runs, leaderboard):
    # alpaca_eval counts a draw only for preference == 1.5 exactly; soft values near 1.5 are wins or losses.
    raw = alpaca_eval_runs[model]["preference"]
    assert sum(r == 1.5 for r in raw) == int(leaderboard[model]["n_draws"])


@pytest.mark.data
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("method", "tolerance"), [("mle", 1.0), ("alpaca_eval", 0.01)])
def test_length_controlled_win_rate_matches_alpaca_eval_minimal_glm(
    model, method, tolerance, alpaca_eval_runs, shared_data
):
    if method == "alpaca_eval":
        pytest.importorskip("sklearn")
    reference = json.loads((shared_data / "alpaca_eval" / "lc_minimal_dev.json").read_text(encoding="utf-8"))
    run = alpaca_eval_runs[model]

    out = length_controlled_win_rate(
        _probabilities(run["preference"]), run["model_lengths"], run["reference_lengths"], method=method
    )

    expected = reference[model]["length_controlled_win_rate_minimal"]
    assert out["length_controlled_win_rate"] == pytest.approx(expected, rel=0, abs=tolerance)
    # Both models write longer answers than they win with: controlling for length raises the win rate.
    assert out["length_controlled_win_rate"] > reference[model]["win_rate"]
    assert out["length_coefficient"] < 0  # the feature is tanh((reference - model) / sd): longer model outputs win
    assert 0 < out["lc_standard_error"] < 10
    assert (out["n_total"], out["n_unparsed"]) == (805, 0)


@pytest.mark.data
def test_lc_standard_error_agrees_with_a_bootstrap(alpaca_eval_runs):
    run = alpaca_eval_runs["claude-2.1"]
    p = np.asarray(_probabilities(run["preference"]), dtype=float)
    model_len, ref_len = np.asarray(run["model_lengths"]), np.asarray(run["reference_lengths"])
    delta_method = length_controlled_win_rate(p, model_len, ref_len, method="mle")["lc_standard_error"]

    rng = np.random.default_rng(0)
    resampled = []
    for _ in range(200):
        i = rng.integers(0, p.size, p.size)
        resampled.append(length_controlled_win_rate(p[i], model_len[i], ref_len[i], method="mle"))
    bootstrap_se = np.std([r["length_controlled_win_rate"] for r in resampled], ddof=1)

    assert delta_method == pytest.approx(bootstrap_se, rel=0.15)


@pytest.mark.data
@pytest.mark.parametrize("statistic", ["win_rate", "discrete_win_rate"])
def test_bootstrap_ci_on_alpaca_eval(statistic, alpaca_eval_runs, leaderboard):
    p = _probabilities(alpaca_eval_runs["claude-2.1"]["preference"])

    ci = bootstrap_ci(p, seed=3, statistic=statistic)

    assert ci["estimate"] == pytest.approx(float(leaderboard["claude-2.1"][statistic]), rel=0, abs=1e-9)
    assert ci["low"] < ci["estimate"] < ci["high"]
    # For a mean, the bootstrap standard error is close to the analytic one (1.12 for the soft win rate).
    if statistic == "win_rate":
        assert ci["bootstrap_standard_error"] == pytest.approx(
            float(leaderboard["claude-2.1"]["standard_error"]), rel=0.1
        )


# ----------------------------------------------------------------------------------------------------------------
# win_rate


def test_win_rate_counts_unparsed_and_excludes_them():
    out = win_rate([1.0, None, 0.0, float("nan"), 0.5])
    # parsed: 1, 0, 0.5 -> mean 0.5; sample std (ddof=1) = 0.5, so SE = 100 * 0.5 / sqrt(3)
    assert out["win_rate"] == pytest.approx(50.0)
    assert out["standard_error"] == pytest.approx(100 * 0.5 / math.sqrt(3))
    assert out["discrete_win_rate"] == pytest.approx(50.0)  # (1 win + 0.5 * 1 draw) / 3
    assert (out["n_wins"], out["n_losses"], out["n_draws"]) == (1, 1, 1)
    assert (out["n_total"], out["n_unparsed"]) == (3, 2)


def test_win_rate_draw_is_one_half_up_to_float_noise():
    # 0.5 +- 1e-6 (TIE_TOLERANCE) is a draw: averaging orders gives 0.49999999999999994 for a model vs itself.
    out = win_rate([0.5, 0.50001, 0.49999, 0.9, (0.3 + 0.7) / 2 - 1e-16, 0.5000001])
    assert (out["n_wins"], out["n_losses"], out["n_draws"]) == (2, 1, 3)
    assert out["discrete_win_rate"] == pytest.approx(100 * (2 + 1.5) / 6)


def test_win_rate_accepts_numpy_arrays():
    out = win_rate(np.array([0.25, 0.75, np.nan]))
    assert out["win_rate"] == pytest.approx(50.0)
    assert (out["n_total"], out["n_unparsed"]) == (2, 1)


def test_win_rate_single_judgment_has_undefined_standard_error():
    out = win_rate([0.8])
    assert out["win_rate"] == pytest.approx(80.0)
    assert math.isnan(out["standard_error"])


@pytest.mark.parametrize(
    ("preferences", "match"),
    [
        ([0.2, 0.4, 1.5], r"preferences\[2\] = 1\.5 is outside \[0, 1\].*minus 1"),
        ([-0.1], r"preferences\[0\] = -0\.1 is outside"),
        ([0.3, "0.7"], r"preferences\[1\] = '0\.7' is not a number"),
        ([True], r"preferences\[0\] = True is not a number"),
        ([], r"no parsed preferences: preferences is empty"),
        ([None, float("nan")], r"no parsed preferences: all 2 judgments are None/NaN"),
        ("0.5", r"must be a sequence"),
        (np.zeros((2, 2)), r"one-dimensional"),
    ],
)
def test_win_rate_rejects_bad_input(preferences, match):
    with pytest.raises(ValueError, match=match):
        win_rate(preferences)


# ----------------------------------------------------------------------------------------------------------------
# length_controlled_win_rate


def test_lc_saturated_model_has_closed_form():
    # Longer model outputs win with p = 0.8, shorter ones with p = 0.4. With two length groups the GLM fits both
    # exactly: theta + phi*t = logit(0.8) = ln 4 and theta - phi*t = logit(0.4) = ln(2/3), so
    # theta = ln(8/3) / 2 and sigmoid(theta) = r / (1 + r) with r = sqrt(8/3).
    prefs, model_len, ref_len = [0.8, 0.4] * 4, [150, 50] * 4, [100] * 8
    r = math.sqrt(8 / 3)

    out = length_controlled_win_rate(prefs, model_len, ref_len, method="mle")

    assert out["length_controlled_win_rate"] == pytest.approx(100 * r / (1 + r), abs=1e-4)
    assert out["intercept"] == pytest.approx(math.log(8 / 3) / 2, abs=1e-5)
    assert out["length_coefficient"] < 0
    assert out["lc_standard_error"] == pytest.approx(0.0, abs=1e-4)  # the fit has no residuals
    assert out["C"] == math.inf


def test_lc_with_equal_lengths_is_the_win_rate():
    # No length difference: the GLM is intercept-only, sigmoid(theta) = mean(p) = 0.6 and the sandwich SE reduces
    # to 100 * sqrt(sum((p - 0.6)^2)) / n = 100 * sqrt(0.16 + 0 + 0.01 + 0.09) / 4.
    out = length_controlled_win_rate([0.2, 0.6, 0.7, 0.9], [100] * 4, [100] * 4, method="mle")
    assert out["length_controlled_win_rate"] == pytest.approx(60.0, abs=1e-4)
    assert out["lc_standard_error"] == pytest.approx(100 * math.sqrt(0.26) / 4, abs=1e-4)
    assert out["length_coefficient"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["mle", "alpaca_eval"])
@pytest.mark.parametrize(("p", "expected"), [(0.0, 0.0), (1.0, 100.0)])
def test_lc_of_all_certain_losses_or_wins_is_the_limit(method, p, expected):
    # Length cannot turn a certain loss into a win; alpaca_eval's liblinear fit would report 50 here.
    out = length_controlled_win_rate([p] * 6, [10, 20, 30, 40, 50, 60], [35] * 6, method=method)
    assert out["length_controlled_win_rate"] == expected
    assert out["lc_standard_error"] == 0.0


def test_lc_mle_stays_finite_when_length_separates_the_labels():
    # Shorter model outputs always lose, longer ones always win, symmetrically around the reference length:
    # the tiny ridge keeps the slope finite and symmetry puts the intercept at 0, i.e. 50%.
    out = length_controlled_win_rate([0, 0, 0, 1, 1, 1], [10, 20, 30, 40, 50, 60], [35] * 6, method="mle")
    assert out["length_controlled_win_rate"] == pytest.approx(50.0, abs=1e-6)
    assert math.isfinite(out["length_coefficient"]) and out["length_coefficient"] < 0


def test_lc_drops_unparsed_judgments_with_their_lengths():
    prefs, model_len, ref_len = [0.8, 0.4] * 4, [150, 50] * 4, [100] * 8
    clean = length_controlled_win_rate(prefs, model_len, ref_len, method="mle")

    noisy = length_controlled_win_rate(
        [*prefs, None, float("nan")], [*model_len, 10_000, 0], [*ref_len, 1, 5_000], method="mle"
    )

    assert noisy["length_controlled_win_rate"] == pytest.approx(clean["length_controlled_win_rate"], abs=1e-9)
    assert (noisy["n_total"], noisy["n_unparsed"]) == (8, 2)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.5, 0.6], [1, 2], [1]), {"method": "mle"}, r"preferences has 2 items but reference_lengths has 1"),
        (([0.5, 0.6], [1, -2], [1, 1]), {"method": "mle"}, r"model_lengths\[1\] = -2\.0 is not a valid length"),
        (([0.5, 0.6], [1, 2], [1, float("inf")]), {"method": "mle"}, r"reference_lengths\[1\] = inf"),
        (([0.5, 0.6, 0.7], [10, 10, 10], [20, 20, 20]), {"method": "mle"}, r"same non-zero length difference"),
        (([0.5, 0.6, 0.7], [1, 2, 3], [3, 2, 1]), {"method": "alpaca_eval"}, r"at least 5 parsed judgments"),
        (([0.5, 0.6], [1, 2], [2, 1]), {"method": "ols"}, r"method='ols' is not supported"),
        (([None, None], [1, 2], [2, 1]), {"method": "mle"}, r"no parsed preferences"),
    ],
)
def test_lc_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        length_controlled_win_rate(*args, **kwargs)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.3.2", {"penalty": "l1"}),
        ("1.7.2", {"penalty": "l1"}),
        ("1.8.0", {"l1_ratio": 1.0}),
        ("1.10.dev0", {"l1_ratio": 1.0}),
    ],
)
def test_sklearn_l1_keywords_follow_the_penalty_deprecation(version, expected):
    assert _sklearn_l1_kwargs(version) == expected


# ----------------------------------------------------------------------------------------------------------------
# bootstrap_ci


def test_bootstrap_ci_is_deterministic_for_a_seed():
    prefs = [0.9, 0.1, 0.6, 0.5, 0.3, 0.8, None, 0.2, 0.7]
    first = bootstrap_ci(prefs, n_resamples=500, seed=7)
    assert first == bootstrap_ci(prefs, n_resamples=500, seed=7)
    assert (first["low"], first["high"]) != (
        bootstrap_ci(prefs, n_resamples=500, seed=8)["low"],
        bootstrap_ci(prefs, n_resamples=500, seed=8)["high"],
    )
    assert first["low"] <= first["estimate"] <= first["high"]
    assert (first["n_total"], first["n_unparsed"], first["seed"], first["n_resamples"]) == (8, 1, 7, 500)


def test_bootstrap_ci_of_identical_preferences_is_a_point():
    # Every resample of [0.75, 0.75, 0.75] has mean 0.75.
    ci = bootstrap_ci([0.75, 0.75, 0.75], n_resamples=50)
    assert ci["low"] == pytest.approx(75.0) and ci["high"] == pytest.approx(75.0)
    assert ci["bootstrap_standard_error"] == pytest.approx(0.0)


def test_bootstrap_ci_discrete_statistic_counts_wins():
    # Soft 0.6 everywhere: every soft resample has mean 0.6, every discrete one mean 1 (three wins).
    soft = bootstrap_ci([0.6, 0.6, 0.6], n_resamples=50)
    discrete = bootstrap_ci([0.6, 0.6, 0.6], n_resamples=50, statistic="discrete_win_rate")
    assert (soft["low"], soft["high"]) == pytest.approx((60.0, 60.0))
    assert (discrete["low"], discrete["estimate"], discrete["high"]) == pytest.approx((100.0, 100.0, 100.0))
    assert discrete["statistic"] == "discrete_win_rate"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 0}, r"n_resamples=0 must be an integer >= 1"),
        ({"confidence": 1.0}, r"confidence=1\.0 must be a number strictly between 0 and 1"),
        ({"seed": -1}, r"seed=-1 must be a non-negative integer"),
        ({"statistic": "median"}, r"statistic='median' is not supported"),
    ],
)
def test_bootstrap_ci_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci([0.2, 0.8], **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# position bias, order combination, length bias


def test_position_bias_on_hand_made_pairs():
    model_first = [0.9, 0.8, 0.1, 0.5, None]
    model_second = [0.6, 0.2, 0.3, 0.5, 0.7]

    out = position_bias(model_first, model_second)

    # Model shown first, decided: 0.9 and 0.8 favour the first output, 0.1 the second (0.5 and None excluded).
    # Model shown second, decided: 0.2 and 0.3 favour the first output (the reference), 0.6 and 0.7 the second.
    assert out["prefer_first_rate"] == pytest.approx(4 / 7)
    assert out["n_decided"] == 7
    # Items parsed in both orders: 0 (model/model), 1 (model/reference), 2 (reference/reference), 3 (tie/tie).
    assert out["order_agreement"] == pytest.approx(3 / 4)
    assert out["n_paired"] == 4
    # Gaps first - second: 0.3, 0.6, -0.2, 0.
    assert out["mean_abs_order_gap"] == pytest.approx(1.1 / 4)
    assert out["mean_order_gap"] == pytest.approx(0.7 / 4)


def test_position_bias_without_decided_or_paired_judgments_is_nan():
    out = position_bias([0.5, None], [None, 0.5])
    assert math.isnan(out["prefer_first_rate"]) and math.isnan(out["order_agreement"])
    assert (out["n_decided"], out["n_paired"]) == (0, 0)


def test_position_bias_needs_the_same_items():
    with pytest.raises(ValueError, match=r"pref_model_first has 2 items but pref_model_second has 1"):
        position_bias([0.1, 0.2], [0.3])


def test_combine_orders():
    assert combine_orders([0.9, None, None, 0.2], [0.5, 0.4, None, float("nan")]) == pytest.approx(
        [0.7, 0.4, None, 0.2]
    )
    with pytest.raises(ValueError, match=r"a has 1 items but b has 2"):
        combine_orders([0.1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"b\[0\] = 2\.0 is outside"):
        combine_orders([0.1], [2.0])


def test_length_bias_on_hand_made_judgments():
    prefs = [0.9, 0.2, 0.7, 0.5, None, 0.4]
    model_len = [200, 300, 100, 50, 10, 80]
    ref_len = [100, 100, 150, 60, 20, 80]

    out = length_bias(prefs, model_len, ref_len)

    # Decided with different lengths: item 0 (longer model won), 1 (longer model lost), 2 (shorter model won).
    assert out["prefer_longer_rate"] == pytest.approx(1 / 3)
    assert (out["n_decided"], out["n_total"]) == (3, 5)
    # Parsed items 0, 1, 2, 3, 5: delta ranks [4, 5, 1, 2, 3], preference ranks [5, 1, 4, 3, 2], sum d^2 = 28,
    # rho = 1 - 6 * 28 / (5 * 24) = -0.4.
    assert out["spearman"] == pytest.approx(-0.4)


def test_length_bias_spearman_uses_average_ranks_for_ties():
    # delta = [1, 1, 2, 3] -> ranks [1.5, 1.5, 3, 4]; preference ranks [1, 2, 3, 4]; centred dot product 4.5 over
    # sqrt(4.5 * 5), i.e. sqrt(0.9). All model outputs are longer and all lose.
    out = length_bias([0.1, 0.2, 0.3, 0.4], [11, 11, 12, 13], [10, 10, 10, 10])
    assert out["spearman"] == pytest.approx(math.sqrt(0.9))
    assert out["prefer_longer_rate"] == 0.0


def test_length_bias_with_equal_lengths_is_undefined():
    out = length_bias([0.1, 0.9], [5, 5], [5, 5])
    assert math.isnan(out["prefer_longer_rate"]) and math.isnan(out["spearman"])
    assert out["n_decided"] == 0


@pytest.mark.parametrize("bad", [None, 3, "0.5", {"a": 1}, iter([0.5])])
def test_win_rate_bad_inputs(bad):
    with pytest.raises(InvalidArgumentError, match="sequence"):
        win_rate(bad)


def test_model_against_itself_is_fifty():
    a = [0.3, 0.7, 0.1, 0.9, 0.2]
    both = [(x + (1 - x)) / 2 for x in a] + [((1 - x) + x) / 2 - 1e-12 for x in a]
    assert win_rate(both)["discrete_win_rate"] == 50.0
    assert bootstrap_ci(both, statistic="discrete_win_rate", n_resamples=50)["low"] == 50.0


def test_metric_option_typo_names_allowed_values():
    with pytest.raises(InvalidArgumentError, match=r"method='typo'.*alpaca_eval"):
        length_controlled_win_rate([1.0, 0.0], [1, 2], [1, 2], method="typo")
