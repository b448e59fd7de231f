"""Win-rate metrics for pairwise LLM-as-judge evaluations, following AlpacaEval's conventions.

Every function takes *preferences* as P(model beats reference) in ``[0, 1]``: ``1`` means the model's output
won, ``0`` that the reference output won, ``0.5`` a tie, and soft values come from the judge's token
probabilities. ``None`` (or NaN) marks a judgment the parser could not read: it is left out of every statistic
and counted in ``n_unparsed``. An AlpacaEval ``preference`` in ``[1, 2]`` converts as ``preference - 1``.

The functions are pure: plain sequences in, plain dicts of Python numbers out. Only numpy is needed, except
:func:`length_controlled_win_rate` with ``method="alpaca_eval"``, which needs scikit-learn
(``pip install 'xl-suite[eval]'``).

Conventions reproduced from ``alpaca_eval.metrics`` (``AbsoluteScoringRule.describe_head2head`` and
``ZeroOneScoringRule``), checked against the published leaderboard in ``tests/evaluation/test_metrics.py``:

* ``win_rate`` is 100 times the mean soft preference and ``standard_error`` is 100 times its standard error
  (sample standard deviation, ``ddof=1``, divided by the square root of n).
* A judgment is a win when ``p > 0.5``, a loss when ``p < 0.5`` and a draw when ``p == 0.5`` (AlpacaEval's
  ``preference == 1.5``); soft preferences are *not* bucketed into ties. "Equal" allows floating-point noise:
  ``|p - 0.5| <= TIE_TOLERANCE`` (1e-6) is a draw, so averaging the two orders of a model judged against itself
  (``0.3`` and ``0.7`` give ``0.49999999999999994``) is a tie, not a loss.
* ``discrete_win_rate`` counts a draw as half a win: ``100 * (n_wins + n_draws / 2) / n_total``.
* ``n_total`` counts the parsed judgments only, as AlpacaEval drops values that are not preferences.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from xl_suite.errors import InvalidArgumentError
from xl_suite.utils.imports import require


__all__ = [
    "GamedBaselines",
    "LC_V1_REGULARIZE_TO_BASELINE_LAMBDA",
    "bootstrap_ci",
    "combine_orders",
    "length_bias",
    "length_controlled_win_rate",
    "length_controlled_v1_win_rate",
    "position_bias",
    "win_rate",
    "TIE_TOLERANCE",
]

WinRateStatistic = Literal["win_rate", "discrete_win_rate"]
LengthControlMethod = Literal["alpaca_eval", "mle"]

_WIN_RATE_STATISTICS = ("win_rate", "discrete_win_rate")
#: Preferences within this distance of 0.5 are draws (floating-point noise from averaging orders or probabilities).
TIE_TOLERANCE = 1e-6
_LENGTH_CONTROL_METHODS = ("alpaca_eval", "mle")

# alpaca_eval's `fit_LogisticRegressionCV` defaults: LogisticRegressionCV(Cs=10) searches np.logspace(-4, 4, 10).
_ALPACA_EVAL_CS = np.logspace(-4, 4, 10)
_ALPACA_EVAL_N_SPLITS = 5
_ALPACA_EVAL_RANDOM_STATE = 123
# Ridge used by method="mle" only to keep the fit finite when labels are perfectly separated (e.g. all losses).
_MLE_RIDGE = 1e-6


def win_rate(preferences: Sequence[float | None]) -> dict[str, float | int]:
    """AlpacaEval's win rate, standard error and discrete win rate of a model against a reference.

    Args:
        preferences: P(model beats reference) per judgment, in ``[0, 1]`` (``0.5`` is a tie), or ``None``/NaN
            for an unparsed judgment.

    Returns:
        A dict with ``win_rate`` (0-100, mean soft preference), ``standard_error`` (0-100, NaN for a single
        judgment), ``discrete_win_rate`` (0-100, draws count half), ``n_wins`` (``p > 0.5``), ``n_losses``
        (``p < 0.5``; AlpacaEval's ``n_wins_base``), ``n_draws`` (``p == 0.5``), ``n_total`` (parsed
        judgments) and ``n_unparsed``.

    Raises:
        ValueError: If a preference is outside ``[0, 1]`` or not a number, or if no preference is parsed.

    Example:
        >>> out = win_rate([1.0, 0.75, 0.5, 0.0, None])
        >>> out["win_rate"], out["discrete_win_rate"]
        (56.25, 62.5)
        >>> out["n_wins"], out["n_losses"], out["n_draws"], out["n_total"], out["n_unparsed"]
        (2, 1, 1, 4, 1)
        >>> round(out["standard_error"], 4)
        21.3478
    """
    p, n_unparsed = _parsed_preferences(preferences)
    n = p.size
    n_wins = int(np.count_nonzero(_wins(p)))
    n_losses = int(np.count_nonzero(_losses(p)))
    n_draws = n - n_wins - n_losses
    return {
        "win_rate": 100.0 * float(p.mean()),
        "standard_error": 100.0 * float(p.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan,
        "discrete_win_rate": 100.0 * (n_wins + 0.5 * n_draws) / n,
        "n_wins": n_wins,
        "n_losses": n_losses,
        "n_draws": n_draws,
        "n_total": n,
        "n_unparsed": n_unparsed,
    }


def length_controlled_win_rate(
    preferences: Sequence[float | None],
    model_lengths: Sequence[float],
    reference_lengths: Sequence[float],
    *,
    method: LengthControlMethod = "alpaca_eval",
) -> dict[str, float | int]:
    """Length-controlled win rate from AlpacaEval's ``length_controlled_minimal`` GLM.

    The model is ``logit P(model wins) = theta + phi * tanh(std_delta_len)`` with
    ``std_delta_len = (reference_length - model_length) / sd``, where ``sd`` is the sample standard deviation
    (``ddof=1``) of ``reference_length - model_length`` over the parsed judgments (AlpacaEval's
    ``len(output_1) - len(output_2)`` with the baseline as ``output_1``). The soft preferences are the labels:
    each judgment enters twice, as label 1 with weight ``p`` and as label 0 with weight ``1 - p``. The
    length-controlled win rate is the prediction at zero length difference, ``100 * sigmoid(theta)``; the sign
    convention only flips ``phi`` and never changes the result.

    Two fits are available:

    * ``"alpaca_eval"`` (default) follows ``alpaca_eval.metrics.glm_winrate.fit_LogisticRegressionCV``:
      scikit-learn's L1 logistic regression (liblinear, no separate intercept, so ``theta`` is penalized too,
      ``random_state=123``) with ``C`` chosen from ``np.logspace(-4, 4, 10)`` by 5-fold cross-validation grouped
      by judgment, scored with the soft-label log loss, then refit on all judgments. It lands within 0.003
      points of alpaca_eval 0.6.6 on the two models in ``tests/evaluation/test_metrics.py``; a residual can appear when two
      values of ``C`` score within liblinear's tolerance of each other. Needs at least 5 parsed judgments.
    * ``"mle"`` is the unpenalized maximum-likelihood fit by Newton's method (numpy only; a ``1e-6`` ridge only
      keeps labels that length separates perfectly finite). It differs from ``"alpaca_eval"`` only by the L1
      shrinkage, about 0.3 points on the same data.

    When every parsed judgment is a certain loss (all ``p == 0``) or a certain win (all ``p == 1``), no length
    adjustment can change the outcome: the result is the GLM's limit, 0 or 100, with a zero standard error and
    no fit. (alpaca_eval's liblinear fit would instead drop the zero-weight class and report 50.)

    ``lc_standard_error`` comes from the delta method, ``100 * s * (1 - s) * se(theta)`` with
    ``s = sigmoid(theta)``, where ``se(theta)`` uses the sandwich (HC0) covariance
    ``H^-1 (sum_i x_i x_i^T (p_i - mu_i)^2) H^-1``. Like ``standard_error`` in :func:`win_rate`, it treats the
    soft preferences themselves as the observations; with equal lengths it reduces to ``100 * std(p) / sqrt(n)``
    (``ddof=0``). It holds ``sd`` and the selected ``C`` fixed.

    Args:
        preferences: P(model beats reference) per judgment, in ``[0, 1]``, or ``None``/NaN when unparsed.
            Unparsed judgments are dropped together with their lengths.
        model_lengths: Length of each model output, in characters (AlpacaEval uses ``str.len()``).
        reference_lengths: Length of each reference output, in characters.
        method: ``"alpaca_eval"`` or ``"mle"``, see above.

    Returns:
        A dict with ``length_controlled_win_rate`` (0-100), ``lc_standard_error`` (0-100), ``intercept``
        (``theta``), ``length_coefficient`` (``phi``, the weight on ``tanh(std_delta_len)``; negative when longer
        model outputs win more), ``C`` (the selected inverse L1 strength; ``inf`` for ``"mle"``, NaN when all
        judgments are certain losses or wins), ``n_total`` and ``n_unparsed``.

    Raises:
        ValueError: On a preference outside ``[0, 1]``, lengths that are negative, non-finite or of another
            count than the preferences, no parsed preference, a constant non-zero length difference (the length
            effect then cannot be told apart from the intercept), fewer than 5 parsed judgments with
            ``method="alpaca_eval"``, or an unknown ``method``.
        ImportError: If ``method="alpaca_eval"`` and scikit-learn is not installed.

    Example:
        Half the model outputs are longer and win 80% of the time, the other half shorter and win 40%:

        >>> prefs, model_len, ref_len = [0.8, 0.4] * 4, [150, 50] * 4, [100] * 8
        >>> round(win_rate(prefs)["win_rate"], 6)
        60.0
        >>> out = length_controlled_win_rate(prefs, model_len, ref_len, method="mle")
        >>> round(out["length_controlled_win_rate"], 2), out["length_coefficient"] < 0
        (62.02, True)
    """
    if method not in _LENGTH_CONTROL_METHODS:
        raise InvalidArgumentError(f"method={method!r} is not supported; use one of {_LENGTH_CONTROL_METHODS}")
    p_all = _as_preferences(preferences)
    model_len = _as_lengths(model_lengths, "model_lengths", p_all.size)
    reference_len = _as_lengths(reference_lengths, "reference_lengths", p_all.size)
    parsed = ~np.isnan(p_all)
    p = p_all[parsed]
    n_unparsed = int(p_all.size - p.size)
    if p.size == 0:
        raise InvalidArgumentError(_no_parsed_message(p_all.size))
    if method == "alpaca_eval" and p.size < _ALPACA_EVAL_N_SPLITS:
        raise InvalidArgumentError(
            f"method='alpaca_eval' needs at least {_ALPACA_EVAL_N_SPLITS} parsed judgments for its "
            f"{_ALPACA_EVAL_N_SPLITS}-fold cross-validation, got {p.size}; use method='mle' or judge more items"
        )

    if not np.any(p > 0) or not np.any(p < 1):
        all_lost = not np.any(p > 0)
        return {
            "length_controlled_win_rate": 0.0 if all_lost else 100.0,
            "lc_standard_error": 0.0,
            "intercept": -math.inf if all_lost else math.inf,
            "length_coefficient": 0.0,
            "C": math.inf if method == "mle" else math.nan,
            "n_total": int(p.size),
            "n_unparsed": n_unparsed,
        }

    delta = (reference_len - model_len)[parsed]
    sd = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    if sd > 0:
        feature = np.tanh(delta / sd)
    elif not np.any(delta):
        feature = np.zeros_like(delta)  # equal lengths everywhere: the GLM reduces to the intercept
    else:
        raise InvalidArgumentError(
            f"every parsed judgment has the same non-zero length difference ({float(delta[0]):g} characters), "
            "so the length effect cannot be separated from the intercept; use win_rate() instead"
        )
    design = np.column_stack([feature, np.ones_like(feature)])  # patsy's column order in alpaca_eval

    if method == "mle":
        coef = _fit_soft_logistic_mle(design, p)
        c_value = math.inf
    else:
        coef, c_value = _fit_alpaca_eval_glm(design, p)
    length_coefficient, intercept = (float(c) for c in coef)
    lc = float(_sigmoid(intercept))
    se_intercept = _sandwich_standard_errors(design, p, coef)[1]
    return {
        "length_controlled_win_rate": 100.0 * lc,
        "lc_standard_error": 100.0 * lc * (1.0 - lc) * float(se_intercept),
        "intercept": intercept,
        "length_coefficient": length_coefficient,
        "C": float(c_value),
        "n_total": int(p.size),
        "n_unparsed": n_unparsed,
    }


@dataclass(frozen=True)
class GamedBaselines:
    """The rows alpaca_eval's ``length_controlled_v1`` fits beside a model's own (its ``df_gamed.csv``).

    ``df_gamed.csv`` (Hub dataset ``tatsu-lab/alpaca_eval``) holds the annotations of the baseline prompted to be
    verbose and to be concise (``gpt4_1106_preview_verbose``/``_concise`` against ``gpt4_1106_preview``, judged by
    ``weighted_alpaca_eval_gpt4_turbo``), and the per-instruction difficulty alpaca_eval estimated once over many
    models. Read it with :func:`xl_suite.evaluation.alpaca_eval.read_gamed_baselines`.

    Attributes:
        index: instruction index of each row (position in AlpacaEval's 805 prompts).
        preference: P(``output_2`` beats ``output_1``) of each row, in ``[0, 1]`` (NaN: no annotation).
        std_delta_len: the row's standardized ``len(output_1) - len(output_2)``.
        instruction_difficulty: the row's instruction difficulty.
        not_gamed_baseline: 1.0 for a row of a model that is not a gamed baseline, else 0.0.
    """

    index: np.ndarray
    preference: np.ndarray
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray
    not_gamed_baseline: np.ndarray

    def difficulty(self, indices: Sequence[int]) -> np.ndarray:
        """The instruction difficulty of each index (the first row of that index, as alpaca_eval reads it).

        Raises:
            ValueError: an index the file has no row for.
        """
        first: dict[int, float] = {}
        for i, d in zip(self.index.tolist(), self.instruction_difficulty.tolist(), strict=True):
            first.setdefault(int(i), float(d))
        missing = [int(i) for i in indices if int(i) not in first]
        if missing:
            raise InvalidArgumentError(
                f"instruction index {missing[0]} (and {len(missing) - 1} more) has no instruction difficulty in the "
                f"gamed-baselines file (it covers indices {min(first)}..{max(first)}); length_controlled_v1 applies "
                "only to AlpacaEval's own 805 prompts"
            )
        return np.array([first[int(i)] for i in indices], dtype=float)


#: alpaca_eval's ``GLM_INFO["length_controlled_v1"]["regularize_to_baseline_lambda"]``.
LC_V1_REGULARIZE_TO_BASELINE_LAMBDA = 0.2


def length_controlled_v1_win_rate(
    preferences: Sequence[float | None],
    model_lengths: Sequence[float],
    reference_lengths: Sequence[float],
    instruction_indices: Sequence[int],
    gamed: GamedBaselines,
    *,
    regularize_to_baseline_lambda: float = LC_V1_REGULARIZE_TO_BASELINE_LAMBDA,
) -> dict[str, float | int]:
    """alpaca_eval's leaderboard length-controlled win rate, its ``length_controlled_v1`` GLM.

    This is the estimator behind alpaca_eval's ``length_controlled_winrate`` column (our reimplementation of
    ``alpaca_eval.metrics.glm_winrate``, checked against it in ``tests/evaluation/test_length_control.py``). It is only
    meaningful for alpaca_eval's own setting: AlpacaEval's English prompts, judged by
    ``weighted_alpaca_eval_gpt4_turbo`` against ``gpt4_1106_preview``, since ``gamed`` (its ``df_gamed.csv``) was
    made there. Elsewhere use :func:`length_controlled_win_rate` (alpaca_eval's ``length_controlled_minimal``).

    The GLM is ``logit P(model wins) = phi * tanh(std_delta_len) + gamma * difficulty + psi * not_gamed_baseline``
    (no intercept), with ``std_delta_len = (reference_length - model_length) / sd`` over the model's rows
    (``sd``: sample standard deviation, ``ddof=1``). It is fit on the model's parsed rows (weight 1,
    ``not_gamed_baseline = 1``) together with the gamed baselines' rows of ``gamed`` (weight
    ``regularize_to_baseline_lambda / 2`` each, ``not_gamed_baseline = 0``), which pull the length coefficient
    towards the one the gamed baselines show. The fit is alpaca_eval's: soft labels (each row twice, label 1 with
    weight ``w * p`` and label 0 with weight ``w * (1 - p)``), L1 logistic regression (liblinear, no intercept,
    ``random_state=123``), ``C`` from ``np.logspace(-4, 4, 10)`` by 5-fold cross-validation grouped by row with
    the weighted soft-label log loss, then refit on all rows. The result is the mean prediction over every
    row of the model (unparsed ones too, as alpaca_eval predicts for every annotation) at zero length difference:
    ``100 * mean(sigmoid(gamma * difficulty_i + psi))``.

    Args:
        preferences: P(model beats the baseline) per instruction, in ``[0, 1]``, or ``None``/NaN when unparsed.
        model_lengths: length of each model output in characters (``output_2``).
        reference_lengths: length of each baseline output in characters (``output_1``).
        instruction_indices: each row's position in AlpacaEval's 805 prompts (alpaca_eval's ``index``).
        gamed: the gamed baselines and instruction difficulties (alpaca_eval's ``df_gamed.csv``).
        regularize_to_baseline_lambda: alpaca_eval's ``regularize_to_baseline_lambda`` (0.2).

    Returns:
        A dict with ``length_controlled_winrate`` (0-100), ``length_coefficient`` (``phi``),
        ``instruction_difficulty_coefficient`` (``gamma``), ``model_coefficient`` (``psi``), ``C``, ``n_total``
        (parsed rows of the model), ``n_unparsed`` and ``n_gamed_rows`` (rows of ``gamed`` in the fit).

    Raises:
        ValueError: invalid preferences or lengths, sequences of different lengths, no parsed preference, an
            instruction index without a difficulty, a constant non-zero length difference, or scikit-learn missing.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> gamed = GamedBaselines(
        ...     index=np.tile(np.arange(20), 2), preference=rng.uniform(size=40), std_delta_len=rng.normal(size=40),
        ...     instruction_difficulty=np.tile(np.linspace(-1, 1, 20), 2), not_gamed_baseline=np.zeros(40))
        >>> out = length_controlled_v1_win_rate([0.9, 0.2] * 10, [300, 100] * 10, [200] * 20, range(20), gamed)
        >>> 0 < out["length_controlled_winrate"] < 100, out["n_total"], out["n_gamed_rows"]
        (True, 20, 40)
    """
    p_all = _as_preferences(preferences)
    model_len = _as_lengths(model_lengths, "model_lengths", p_all.size)
    reference_len = _as_lengths(reference_lengths, "reference_lengths", p_all.size)
    indices = [int(i) for i in instruction_indices]
    _check_same_length(p_all.size, len(indices), "preferences", "instruction_indices")
    if not 0 <= regularize_to_baseline_lambda:
        raise InvalidArgumentError(
            f"regularize_to_baseline_lambda={regularize_to_baseline_lambda!r} must be >= 0 (alpaca_eval uses 0.2)"
        )
    parsed = ~np.isnan(p_all)
    if not parsed.any():
        raise InvalidArgumentError(_no_parsed_message(p_all.size))
    difficulty = gamed.difficulty(indices)

    delta = reference_len - model_len  # alpaca_eval: len(output_1) - len(output_2), over every annotation
    sd = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    if sd > 0:
        feature = np.tanh(delta / sd)
    elif not np.any(delta):
        feature = np.zeros_like(delta)
    else:
        raise InvalidArgumentError(
            f"every judgment has the same non-zero length difference ({float(delta[0]):g} characters), so the "
            "length effect cannot be separated from the model's coefficient"
        )
    gamed_rows = ~np.isnan(gamed.preference)  # alpaca_eval drops rows without a preference before the fit
    design = np.vstack(
        [
            np.column_stack(
                [
                    np.tanh(gamed.std_delta_len[gamed_rows]),
                    gamed.instruction_difficulty[gamed_rows],
                    gamed.not_gamed_baseline[gamed_rows],
                ]
            ),
            np.column_stack([feature[parsed], difficulty[parsed], np.ones(int(parsed.sum()))]),
        ]
    )
    labels = np.concatenate([gamed.preference[gamed_rows], p_all[parsed]])
    # alpaca_eval: not_gamed_baseline + lambda * (not not_gamed_baseline) / 2 ("divided by 2 because there are two
    # gamed baselines").
    ngb = np.concatenate([gamed.not_gamed_baseline[gamed_rows], np.ones(int(parsed.sum()))])
    row_weight = ngb + regularize_to_baseline_lambda * (1.0 - ngb) / 2
    coef, c_value = _fit_alpaca_eval_glm(design, labels, row_weight)
    length_coefficient, difficulty_coefficient, model_coefficient = (float(c) for c in coef)
    predicted = _sigmoid(difficulty_coefficient * difficulty + model_coefficient)
    return {
        "length_controlled_winrate": 100.0 * float(np.mean(predicted)),
        "length_coefficient": length_coefficient,
        "instruction_difficulty_coefficient": difficulty_coefficient,
        "model_coefficient": model_coefficient,
        "C": float(c_value),
        "n_total": int(parsed.sum()),
        "n_unparsed": int(p_all.size - parsed.sum()),
        "n_gamed_rows": int(gamed_rows.sum()),
    }


def bootstrap_ci(
    preferences: Sequence[float | None],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: WinRateStatistic = "win_rate",
) -> dict[str, float | int | str]:
    """Seeded percentile bootstrap confidence interval of the win rate (0-100 scale).

    Judgments are resampled with replacement ``n_resamples`` times with ``numpy.random.default_rng(seed)``; the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled statistic.
    The same inputs and seed always give the same interval.

    Args:
        preferences: P(model beats reference) per judgment, in ``[0, 1]``, or ``None``/NaN when unparsed
            (dropped before resampling).
        n_resamples: Number of bootstrap resamples, at least 1.
        confidence: Coverage of the interval, strictly between 0 and 1.
        seed: Non-negative seed of the random generator.
        statistic: ``"win_rate"`` (mean soft preference) or ``"discrete_win_rate"`` (wins 1, draws 0.5,
            losses 0), as in :func:`win_rate`.

    Returns:
        A dict with ``low`` and ``high`` (0-100), ``estimate`` (the statistic on the full sample),
        ``bootstrap_standard_error`` (standard deviation of the resampled statistic), ``confidence``,
        ``n_resamples``, ``seed``, ``statistic``, ``n_total`` and ``n_unparsed``.

    Raises:
        ValueError: On invalid preferences, no parsed preference, or an invalid ``n_resamples``,
            ``confidence``, ``seed`` or ``statistic``.

    Example:
        >>> ci = bootstrap_ci([1.0, 0.0, 1.0, 0.5, 0.25, None], n_resamples=200, seed=1)
        >>> round(ci["estimate"], 6), ci["n_total"], ci["n_unparsed"]
        (55.0, 5, 1)
        >>> ci["low"] <= ci["estimate"] <= ci["high"]
        True
        >>> ci == bootstrap_ci([1.0, 0.0, 1.0, 0.5, 0.25, None], n_resamples=200, seed=1)
        True
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 1:
        raise InvalidArgumentError(f"n_resamples={n_resamples!r} must be an integer >= 1, e.g. 1000")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence={confidence!r} must be a number strictly between 0 and 1, e.g. 0.95")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidArgumentError(f"seed={seed!r} must be a non-negative integer")
    if statistic not in _WIN_RATE_STATISTICS:
        raise InvalidArgumentError(f"statistic={statistic!r} is not supported; use one of {_WIN_RATE_STATISTICS}")
    p, n_unparsed = _parsed_preferences(preferences)
    scores = p if statistic == "win_rate" else _discrete_scores(p)
    n = scores.size

    rng = np.random.default_rng(int(seed))
    resampled = np.empty(int(n_resamples))
    rows_per_chunk = max(1, 2**22 // n)  # bound the index matrix to about 32 MB
    for start in range(0, int(n_resamples), rows_per_chunk):
        stop = min(int(n_resamples), start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        resampled[start:stop] = scores[idx].mean(axis=1)
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(resampled, [alpha / 2, 1.0 - alpha / 2])
    return {
        "low": 100.0 * float(low),
        "high": 100.0 * float(high),
        "estimate": 100.0 * float(scores.mean()),
        "bootstrap_standard_error": 100.0 * float(resampled.std(ddof=1)) if n_resamples > 1 else math.nan,
        "confidence": float(confidence),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "statistic": statistic,
        "n_total": int(n),
        "n_unparsed": n_unparsed,
    }


def position_bias(
    pref_model_first: Sequence[float | None],
    pref_model_second: Sequence[float | None],
) -> dict[str, float | int]:
    """Position bias of a judge that saw the same items in both presentation orders.

    Both inputs are in the model's frame, i.e. already un-swapped: item ``i`` of each is P(model beats
    reference), once judged with the model's output shown first and once with it shown second.

    Args:
        pref_model_first: Preferences judged with the model's output shown first.
        pref_model_second: Preferences judged with the model's output shown second, same items and order.

    Returns:
        A dict with

        * ``prefer_first_rate``: share of decided judgments (not ties, not ``None``, both orders pooled) that
          favour the output shown first (alpaca_eval's "prefer 1"); ``0.5`` means no position bias. A judgment
          favours the first output when ``p > 0.5`` in the model-first order and when ``p < 0.5`` in the
          model-second order. NaN when no judgment is decided.
        * ``order_agreement``: share of items parsed in both orders whose winner (model, reference or tie, from
          the sign of ``p - 0.5``) is the same in both orders. NaN when no item is parsed in both.
        * ``mean_abs_order_gap``: mean ``|p_first - p_second|`` over those items.
        * ``mean_order_gap``: mean ``p_first - p_second`` over those items; positive means the output shown
          first gains.
        * ``n_decided`` (judgments behind ``prefer_first_rate``) and ``n_paired`` (items behind the rest).

    Raises:
        ValueError: If a preference is invalid or the two sequences differ in length.

    Example:
        >>> out = position_bias([0.9, 0.8, 0.1, 0.5], [0.6, 0.2, 0.3, 0.5])
        >>> round(out["prefer_first_rate"], 4), out["order_agreement"], out["n_decided"], out["n_paired"]
        (0.6667, 0.75, 6, 4)
    """
    first = _as_preferences(pref_model_first, "pref_model_first")
    second = _as_preferences(pref_model_second, "pref_model_second")
    _check_same_length(first.size, second.size, "pref_model_first", "pref_model_second")

    first_decided = first[_decided(first)]
    second_decided = second[_decided(second)]
    n_decided = first_decided.size + second_decided.size
    n_prefer_first = int(np.count_nonzero(_wins(first_decided)) + np.count_nonzero(_losses(second_decided)))

    paired = ~np.isnan(first) & ~np.isnan(second)
    a, b = first[paired], second[paired]
    n_paired = int(a.size)
    return {
        "prefer_first_rate": n_prefer_first / n_decided if n_decided else math.nan,
        "order_agreement": float(np.mean(_outcome(a) == _outcome(b))) if n_paired else math.nan,
        "mean_abs_order_gap": float(np.mean(np.abs(a - b))) if n_paired else math.nan,
        "mean_order_gap": float(np.mean(a - b)) if n_paired else math.nan,
        "n_decided": int(n_decided),
        "n_paired": n_paired,
    }


def combine_orders(a: Sequence[float | None], b: Sequence[float | None]) -> list[float | None]:
    """Per-item mean of the preferences judged in the two presentation orders.

    Args:
        a: Preferences from one order, P(model beats reference) or ``None``/NaN.
        b: Preferences from the other order, same items and order.

    Returns:
        For each item, the mean of the two preferences; the parsed one when the other is ``None``/NaN; ``None``
        when both are.

    Raises:
        ValueError: If a preference is invalid or the two sequences differ in length.

    Example:
        >>> combine_orders([0.9, None, None, 0.2], [0.5, 0.4, None, float("nan")])
        [0.7, 0.4, None, 0.2]
    """
    first = _as_preferences(a, "a")
    second = _as_preferences(b, "b")
    _check_same_length(first.size, second.size, "a", "b")
    combined: list[float | None] = []
    for x, y in zip(first.tolist(), second.tolist(), strict=True):
        if math.isnan(x) and math.isnan(y):
            combined.append(None)
        elif math.isnan(x):
            combined.append(y)
        elif math.isnan(y):
            combined.append(x)
        else:
            combined.append((x + y) / 2)
    return combined


def length_bias(
    preferences: Sequence[float | None],
    model_lengths: Sequence[float],
    reference_lengths: Sequence[float],
) -> dict[str, float | int]:
    """How much the judge favours the longer output (alpaca_eval's "prefer longer").

    Args:
        preferences: P(model beats reference) per judgment, in ``[0, 1]``, or ``None``/NaN when unparsed.
        model_lengths: Length of each model output (characters, or any consistent unit).
        reference_lengths: Length of each reference output, same unit.

    Returns:
        A dict with

        * ``prefer_longer_rate``: share of decided judgments (``p != 0.5``, parsed, outputs of different
          lengths) won by the longer output; ``0.5`` means no length bias. NaN when there are none.
        * ``spearman``: Spearman rank correlation between ``model_length - reference_length`` and the
          preference over all parsed judgments (average ranks for ties); positive means longer model outputs
          are preferred. NaN when either side is constant or fewer than two judgments are parsed.
        * ``n_decided`` (judgments behind ``prefer_longer_rate``) and ``n_total`` (parsed judgments).

    Raises:
        ValueError: On an invalid preference or length, or sequences of different lengths.

    Example:
        >>> out = length_bias([0.9, 0.2, 0.7, 0.5], [200, 300, 100, 50], [100, 100, 150, 60])
        >>> round(out["prefer_longer_rate"], 4), out["n_decided"], out["n_total"]
        (0.3333, 3, 4)
    """
    p_all = _as_preferences(preferences)
    model_len = _as_lengths(model_lengths, "model_lengths", p_all.size)
    reference_len = _as_lengths(reference_lengths, "reference_lengths", p_all.size)
    parsed = ~np.isnan(p_all)
    p = p_all[parsed]
    delta = (model_len - reference_len)[parsed]

    decided = _decided(p) & (delta != 0)
    longer_won = (delta[decided] > 0) == _wins(p[decided])
    n_decided = int(np.count_nonzero(decided))
    return {
        "prefer_longer_rate": float(np.mean(longer_won)) if n_decided else math.nan,
        "spearman": _spearman(delta, p),
        "n_decided": n_decided,
        "n_total": int(p.size),
    }


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _as_preferences(preferences: Sequence[float | None], name: str = "preferences") -> np.ndarray:
    """Validate preferences into a float array with NaN for unparsed judgments."""
    if isinstance(preferences, (str, bytes, dict)) or preferences is None or not hasattr(preferences, "__len__"):
        raise InvalidArgumentError(
            f"{name} must be a sequence (list, tuple, array) of floats in [0, 1] or None, "
            f"got {type(preferences).__name__}; e.g. win_rate([1.0, 0.5, None])"
        )
    if isinstance(preferences, np.ndarray) and preferences.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {preferences.shape}")
    if isinstance(preferences, np.ndarray) and preferences.dtype.kind in "fiu":
        values = preferences.astype(float)
    else:
        values = np.empty(len(preferences))
        for i, value in enumerate(preferences):
            if value is None:
                values[i] = math.nan
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidArgumentError(
                    f"{name}[{i}] = {value!r} is not a number; pass P(model beats reference) in [0, 1] or None"
                )
            else:
                values[i] = float(value)
    bad = np.flatnonzero(~np.isnan(values) & ((values < 0) | (values > 1)))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgumentError(
            f"{name}[{i}] = {float(values[i])!r} is outside [0, 1]; pass P(model beats reference) "
            "(an AlpacaEval preference in [1, 2] minus 1), or None when unparsed"
        )
    return values


def _parsed_preferences(preferences: Sequence[float | None]) -> tuple[np.ndarray, int]:
    """The parsed preferences and the number of unparsed ones; raise if none is parsed."""
    values = _as_preferences(preferences)
    parsed = values[~np.isnan(values)]
    if parsed.size == 0:
        raise InvalidArgumentError(_no_parsed_message(values.size))
    return parsed, int(values.size - parsed.size)


def _no_parsed_message(n: int) -> str:
    if n == 0:
        return "no parsed preferences: preferences is empty; pass at least one judgment"
    return (
        f"no parsed preferences: all {n} judgments are None/NaN; check the judge's raw completions and parser "
        "before computing a win rate"
    )


def _as_lengths(lengths: Sequence[float], name: str, n: int) -> np.ndarray:
    """Validate output lengths into a float array of ``n`` non-negative finite values."""
    try:
        values = np.asarray(lengths, dtype=float)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{name} must be a sequence of non-negative numbers (characters per output)") from e
    if values.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {values.shape}")
    _check_same_length(n, values.size, "preferences", name)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgumentError(
            f"{name}[{i}] = {float(values[i])!r} is not a valid length; pass a non-negative character count"
        )
    return values


def _check_same_length(n_a: int, n_b: int, name_a: str, name_b: str) -> None:
    if n_a != n_b:
        raise InvalidArgumentError(
            f"{name_a} has {n_a} items but {name_b} has {n_b}; pass one entry per judged item in each"
        )


def _discrete_scores(p: np.ndarray) -> np.ndarray:
    """Win 1, draw 0.5, loss 0 (alpaca_eval's ZeroOneScoringRule)."""
    return np.where(_wins(p), 1.0, np.where(_losses(p), 0.0, 0.5))


def _wins(p: np.ndarray) -> np.ndarray:
    """``p > 0.5`` beyond floating-point noise (see :data:`TIE_TOLERANCE`)."""
    return p > 0.5 + TIE_TOLERANCE


def _losses(p: np.ndarray) -> np.ndarray:
    """``p < 0.5`` beyond floating-point noise."""
    return p < 0.5 - TIE_TOLERANCE


def _outcome(p: np.ndarray) -> np.ndarray:
    """1 win, 0 draw, -1 loss."""
    return _wins(p).astype(int) - _losses(p).astype(int)


def _decided(p: np.ndarray) -> np.ndarray:
    """Neither a draw nor unparsed."""
    return _wins(p) | _losses(p)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=float)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return average[inverse.ravel()]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation as the Pearson correlation of average ranks; NaN when undefined."""
    if x.size < 2:
        return math.nan
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan


def _soft_logistic_loss(design: np.ndarray, p: np.ndarray, coef: np.ndarray, ridge: float) -> float:
    """Negative soft-label log-likelihood plus a ridge term."""
    eta = design @ coef
    nll = np.sum(p * np.logaddexp(0.0, -eta) + (1.0 - p) * np.logaddexp(0.0, eta))
    return float(nll + 0.5 * ridge * coef @ coef)


def _fit_soft_logistic_mle(design: np.ndarray, p: np.ndarray, max_iter: int = 200, tol: float = 1e-10) -> np.ndarray:
    """Newton's method with step halving on the soft-label logistic likelihood (tiny ridge, see _MLE_RIDGE)."""
    coef = np.zeros(design.shape[1])
    identity = np.eye(design.shape[1])
    loss = _soft_logistic_loss(design, p, coef, _MLE_RIDGE)
    for _ in range(max_iter):
        mu = _sigmoid(design @ coef)
        gradient = design.T @ (mu - p) + _MLE_RIDGE * coef
        hessian = (design * (mu * (1.0 - mu))[:, None]).T @ design + _MLE_RIDGE * identity
        step = np.linalg.solve(hessian, gradient)
        t = 1.0
        while True:
            candidate = coef - t * step
            candidate_loss = _soft_logistic_loss(design, p, candidate, _MLE_RIDGE)
            if candidate_loss <= loss or t < 1e-12:
                break
            t /= 2
        converged = np.max(np.abs(candidate - coef)) <= tol * (1.0 + np.max(np.abs(coef)))
        coef, loss = candidate, candidate_loss
        if converged:
            return coef
    raise InvalidArgumentError(
        f"the length-controlled GLM did not converge in {max_iter} Newton steps (coefficients {coef.tolist()}); "
        "check the preferences and lengths, or use method='alpaca_eval'"
    )


def _sklearn_l1_kwargs(version: str) -> dict[str, object]:
    """L1 penalty keywords for LogisticRegression: ``penalty`` is deprecated from scikit-learn 1.8."""
    match = re.match(r"(\d+)\.(\d+)", version)
    major_minor = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return {"l1_ratio": 1.0} if major_minor >= (1, 8) else {"penalty": "l1"}


def _fit_alpaca_eval_glm(
    design: np.ndarray, p: np.ndarray, row_weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """alpaca_eval's fit_LogisticRegressionCV on soft labels: L1, liblinear, C by grouped 5-fold CV.

    ``row_weight`` (default 1 per row) multiplies each row's two sample weights and its term of the CV log loss,
    as alpaca_eval's ``sample_weight`` and ``true_sample_weight`` do (``length_controlled_v1`` weighs the gamed
    baselines' rows by 0.1).
    """
    sklearn = require("sklearn", "The length-controlled win rate with method='alpaca_eval' (method='mle' does not)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n = p.size
    w = np.ones(n) if row_weight is None else np.asarray(row_weight, dtype=float)
    x = np.vstack([design, design])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    weight = np.concatenate([p * w, (1.0 - p) * w])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    penalty = _sklearn_l1_kwargs(sklearn.__version__)

    def fit(c_value: float, rows: np.ndarray | slice) -> LogisticRegression:
        model = LogisticRegression(
            C=c_value,
            solver="liblinear",
            fit_intercept=False,
            random_state=_ALPACA_EVAL_RANDOM_STATE,
            **penalty,
        )
        return model.fit(x[rows], y[rows], sample_weight=weight[rows])

    cv_loss = np.zeros(_ALPACA_EVAL_CS.size)
    for train, test in GroupKFold(n_splits=_ALPACA_EVAL_N_SPLITS).split(x, y, groups):
        target = p[groups[test]]  # alpaca_eval's logloss_continuous: both copies of a judgment target p
        target_weight = w[groups[test]]
        for j, c_value in enumerate(_ALPACA_EVAL_CS):
            q = np.clip(fit(c_value, train).predict_proba(x[test])[:, 1], 1e-15, 1 - 1e-15)
            cv_loss[j] -= np.mean(target_weight * (target * np.log(q) + (1.0 - target) * np.log(1.0 - q)))
    best_c = float(_ALPACA_EVAL_CS[int(np.argmin(cv_loss))])
    return fit(best_c, slice(None)).coef_[0].astype(float), best_c


def _sandwich_standard_errors(design: np.ndarray, p: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """HC0 sandwich standard errors of the soft-label logistic coefficients."""
    mu = _sigmoid(design @ coef)
    bread = np.linalg.pinv((design * (mu * (1.0 - mu))[:, None]).T @ design)
    meat = (design * ((p - mu) ** 2)[:, None]).T @ design
    covariance = bread @ meat @ bread
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None))
