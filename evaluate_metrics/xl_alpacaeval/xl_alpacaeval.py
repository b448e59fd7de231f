# Copyright 2025 The XL-Suite authors. Licensed under the Apache License, Version 2.0.
"""XL-AlpacaEval: cross-lingual open-ended generation scored by an LLM judge and language fidelity.

A thin ``evaluate`` shell over :mod:`xl_suite.evaluation`; all logic lives in the ``xl_suite`` package.
"""

from __future__ import annotations

import logging

import datasets
import evaluate

# One import line from the package: evaluate's dependency check reads it, and the "From:" comment is the pip
# requirement its error message names when xl-suite is missing (no code is downloaded for a library import).
from xl_suite import CITATION, evaluate_responses, language_fidelity, list_presets, load_preset  # From: xl-suite[eval]


logger = logging.getLogger(__name__)

_CITATION = CITATION

_DESCRIPTION = """\
XL-AlpacaEval scores answers to English instructions that ask for a reply in another language (cross-lingual
open-ended generation; Iyer et al., 2025), or to instructions translated into that language (m-AlpacaEval).

* Without a judge (config ``fidelity``, or any config without a judge engine): the share of answers written in the
  target language (offline language identifier) and a line-level pass rate in the manner of the Language Confusion
  Benchmark. Fast and offline: usable inside a training loop.
* With a judge engine: pairwise LLM-as-judge win rate against reference answers (both presentation orders by
  default; soft preferences from logprobs where the backend gives them; tie = 0.5), its standard error and seeded
  bootstrap CI, discrete and length-controlled win rates, position/length-bias diagnostics, parse rate, and 1-5
  rubric scores (helpfulness, relevance, accuracy, fluency, naturalness), overall, per language and per sample.

The paper judges with GPT-4o against GPT-4o-mini references; its judge prompt, tie rule and fine-grained metrics are
unknown, and those used here are a reconstruction (see the metric card). Config names select judge presets:
``default`` (judge optional), ``fidelity`` (no judge, only predictions and languages), ``gpt-4o`` (the paper's
setup via the OpenAI API) and ``local-vllm`` (a local judge; pass ``judge_model=`` to ``evaluate.load``).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the model's answers ("" for an empty answer).
    references (`list` of `str`, or `list` of `list` of `str`): reference answers (config `fidelity`: not taken).
        With several references per item, the item's preference is the mean over them.
    instructions (`list` of `str`): the prompts as the model saw them (config `fidelity`: not taken).
    languages (`list` of `str`): target language code of each answer (e.g. "de", "mt").
    judge (`xl_suite.engines.base.Generator`, optional): judge engine for this call (e.g. a
        `xl_suite.engines.vllm_engine.VLLMGenerator`); default: the one built from the config's preset, if any.
        Without a judge, only language fidelity is computed.
    rubric (`bool`, optional): also compute rubric scores (default: the preset's setting, True).
    order (`str`, optional): "both" (default) or "random" (one content-seeded order per item).
    annotation_cache_dir (`str`, optional): judgment cache folder; reruns then make zero judge calls.
    n_resamples (`int`): bootstrap resamples for the CI. Defaults to 1000.
    seed (`int`): bootstrap seed. Defaults to 0.
    lc_method (`str`): "alpaca_eval" (default) or "mle" fit of `lc_minimal_winrate`.

Returns:
    Without a judge: `language_fidelity` (0-100, family-aware: Mandarin labelled Wu is Chinese),
    `language_fidelity_strict` (0-100, exact label), `line_pass_rate` (0-100), `per_language` (dict; a language no
    offline identifier recognises has `status` "n/a", a `reason` and NaN rates, never 0), and the per-sample lists
    `detected_language`, `is_target`, `is_target_strict`, `line_pass`. With a judge these are returned too.
    With a judge, also: `win_rate`, `standard_error`, `ci_low`, `ci_high`, `discrete_win_rate`,
    `lc_minimal_winrate` and `lc_minimal_standard_error` (length-controlled win rate by alpaca_eval's
    `length_controlled_minimal` GLM; alpaca_eval's leaderboard column `length_controlled_winrate` is its
    `length_controlled_v1`, which needs its own judgments and is not computed here), `n_wins`, `n_losses`,
    `n_draws`, `n_unparsed`, `parse_rate`,
    `prefer_first_rate`, `prefer_longer_rate`, `rubric_<dimension>` means (0-100 scale for rates, 1-5 for rubric),
    `per_language` (the same per language), `ledger` (judge requests, cache hits, tokens), and the per-sample
    lists `preferences` (P(model beats reference), None when unparsed), `pref_model_first`,
    `pref_model_second`, `verdicts`, `rubric_scores`. NaN marks a statistic that cannot be computed.

Examples:

    Language fidelity only (no judge, offline):

    >>> import evaluate
    >>> metric = evaluate.load("evaluate_metrics/xl_alpacaeval", "fidelity")
    >>> out = metric.compute(predictions=["Das Wetter ist heute wirklich schön.", "The weather is nice today."],
    ...                      languages=["de", "de"])
    >>> out["language_fidelity"], out["detected_language"]
    (50.0, ['de', 'en'])

    The ``default`` config does the same when it gets no references, instructions or judge:

    >>> evaluate.load("evaluate_metrics/xl_alpacaeval").compute(predictions=["Guten Morgen, wie geht es dir?"],
    ...                                                         languages=["de"])["language_fidelity"]
    100.0

    With a judge (any xl_suite generator; a fake one that always prefers the first answer here). Both orders are
    judged, so its position bias cancels out: every item is a tie.

    >>> from xl_suite import FakeGenerator
    >>> judge = FakeGenerator(lambda messages, i, sampling: '{"winner": "A"}')
    >>> metric = evaluate.load("evaluate_metrics/xl_alpacaeval")
    >>> out = metric.compute(predictions=["Berlin ist die Hauptstadt.", "Zwei plus zwei ist vier."],
    ...                      references=["Die Hauptstadt ist Berlin.", "Vier."],
    ...                      instructions=["What is the capital of Germany? Please respond in German.",
    ...                                    "What is 2+2? Please respond in German."],
    ...                      languages=["de", "de"], judge=judge, rubric=False)
    >>> out["win_rate"], out["prefer_first_rate"], out["preferences"]
    (50.0, 1.0, [0.5, 0.5])
"""

_FIDELITY = "fidelity"
_DEFAULT = "default"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class XlAlpacaeval(evaluate.Metric):
    """XL-AlpacaEval win rates, rubric scores and language fidelity (config names select judge presets).

    Args:
        judge: a ready judge engine (any ``xl_suite`` generator) used by every ``compute`` call.
        judge_model: judge model for the config's preset (required by ``local-vllm``; overrides ``gpt-4o``'s).
        judge_backend: override the preset's backend (``vllm``, ``openai``, ``transformers``).
        judge_revision: pinned revision of the judge model.
        judge_engine_kwargs: extra engine arguments (e.g. ``{"max_model_len": 4096}``).
        annotation_cache_dir: default judgment cache folder for ``compute``.
        **kwargs: ``evaluate.EvaluationModule`` arguments (``config_name``, ``cache_dir``...).
    """

    def __init__(
        self,
        *args,
        judge=None,
        judge_model: str | None = None,
        judge_backend: str | None = None,
        judge_revision: str | None = None,
        judge_engine_kwargs: dict | None = None,
        annotation_cache_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        allowed = [_DEFAULT, _FIDELITY, *list_presets()]
        if self.config_name not in allowed:
            raise ValueError(f"Unknown config {self.config_name!r} for xl_alpacaeval; choose one of {allowed}.")
        if self.config_name == _FIDELITY and (judge is not None or judge_model):
            raise ValueError("Config 'fidelity' never judges; load the 'default' or a preset config to use a judge.")
        self.judge = judge
        self.annotation_cache_dir = annotation_cache_dir
        self._judge_args = {
            "judge_model": judge_model,
            "judge_backend": judge_backend,
            "judge_revision": judge_revision,
        }
        self._judge_engine_kwargs = dict(judge_engine_kwargs or {})
        self._owns_judge = False
        self.preset = None

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score the answers; see ``_KWARGS_DESCRIPTION``.

        In the ``default`` config, a call without ``references``, ``instructions`` and a judge computes language
        fidelity from ``predictions`` and ``languages`` alone (``evaluate`` would otherwise demand every column of
        the judged schema).
        """
        fidelity_only = (
            self.config_name == _DEFAULT
            and references is None
            and kwargs.get("instructions") is None
            and kwargs.get("judge") is None
            and self.judge is None
        )
        if not fidelity_only:
            if predictions is not None and len(predictions) == 0:  # evaluate itself fails on empty inputs
                raise ValueError("No predictions given: pass at least one answer (predictions=[...]).")
            return super().compute(predictions=predictions, references=references, **kwargs)
        unknown = sorted(set(kwargs) - {"languages", "instructions", "judge"})
        if unknown:
            raise ValueError(
                f"A fidelity-only call takes predictions= and languages=; got also {unknown}. Pass "
                "references= and instructions= (and a judge) for the judged scores."
            )
        languages = kwargs.get("languages")
        if predictions is None or languages is None:
            raise ValueError("A fidelity-only call needs predictions= and languages= (one language code per answer).")
        if len(predictions) != len(languages):
            raise ValueError(
                f"Mismatch in the number of predictions ({len(predictions)}) and languages ({len(languages)})."
            )
        return _fidelity_only(predictions, languages)

    def _info(self):
        if self.config_name == _FIDELITY:
            features = datasets.Features(
                {"predictions": datasets.Value("string"), "languages": datasets.Value("string")}
            )
        else:
            features = [
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                        "instructions": datasets.Value("string"),
                        "languages": datasets.Value("string"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                        "instructions": datasets.Value("string"),
                        "languages": datasets.Value("string"),
                    }
                ),
            ]
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            homepage="https://arxiv.org/abs/2503.22973",
            reference_urls=["https://arxiv.org/abs/2503.22973", "https://github.com/tatsu-lab/alpaca_eval"],
        )

    def _download_and_prepare(self, dl_manager):
        """Resolve the judge preset and build its engine lazily (vLLM/OpenAI are imported only here)."""
        if self.config_name == _FIDELITY:
            return
        wants_judge = self.config_name != _DEFAULT or self._judge_args["judge_model"]
        if not wants_judge:
            return
        name = self.config_name if self.config_name != _DEFAULT else "local-vllm"
        self.preset = load_preset(name, **self._judge_args)
        if self.judge is None and self.preset.judge_model:
            self.judge = self.preset.build_judge(**self._judge_engine_kwargs)
            self._owns_judge = True

    def close(self) -> None:
        """Close the judge engine this metric built (not one passed in)."""
        if self._owns_judge and self.judge is not None:
            self.judge.close()
            self.judge = None
            self._owns_judge = False

    def _compute(
        self,
        *,
        predictions,
        references=None,
        instructions=None,
        languages=None,
        judge=None,
        rubric=None,
        order=None,
        annotation_cache_dir=None,
        n_resamples=1000,
        seed=0,
        lc_method="alpaca_eval",
    ):
        judge = judge if judge is not None else self.judge
        if self.config_name == _FIDELITY and judge is not None:
            raise ValueError("Config 'fidelity' never judges; load the 'default' or a preset config to use a judge.")
        if judge is None:
            if self.preset is not None and not self.preset.judge_model:
                raise ValueError(
                    f"Config {self.config_name!r} needs a judge model: evaluate.load(..., "
                    f"{self.config_name!r}, judge_model=...) or compute(..., judge=<generator>)."
                )
            return _fidelity_only(predictions, languages)
        preset = self.preset or load_preset("local-vllm")
        config = preset.with_overrides(rubric=rubric, order=order).judge
        result = evaluate_responses(
            predictions,
            languages,
            references=references,
            instructions=instructions,
            judge=judge,
            config=config,
            cache_dir=annotation_cache_dir or self.annotation_cache_dir,
            preset=f"{preset.name} v{preset.version}",
            n_resamples=n_resamples,
            seed=seed,
            lc_method=lc_method,
        )
        overall = dict(result.table["overall"])
        overall.pop("language", None)
        fid = language_fidelity(list(predictions), list(languages))  # cached model: milliseconds
        overall["language_fidelity_strict"] = fid["language_fidelity_strict"]
        out = {
            **overall,
            "per_language": {k: v for k, v in result.table.items() if k != "overall"},
            "ledger": result.ledger,
            "warnings": result.meta["warnings"],
        }
        samples = result.per_sample
        out.update(
            {
                "preferences": [s["p_model_wins"] for s in samples],
                "pref_model_first": [s["pref_model_first"] for s in samples],
                "pref_model_second": [s["pref_model_second"] for s in samples],
                "verdicts": [s["verdicts"] for s in samples],
                "rubric_scores": [s.get("rubric") for s in samples],
                "detected_language": [s["detected_language"] for s in samples],
                "is_target": [s["is_target"] for s in samples],
                "line_pass": [s["line_pass"] for s in samples],
                "is_target_strict": fid["is_target_strict"],
            }
        )
        return out


def _fidelity_only(predictions, languages) -> dict:
    fid = language_fidelity(list(predictions), list(languages))
    return {
        k: fid[k]
        for k in (
            "language_fidelity",
            "language_fidelity_strict",
            "line_pass_rate",
            "per_language",
            "detected_language",
            "is_target",
            "is_target_strict",
            "line_pass",
        )
    }
