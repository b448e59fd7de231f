"""Pairwise and rubric LLM judges for XL-AlpacaEval and m-AlpacaEval, stored in the run layer's keyed store.

**Reconstruction.** The paper (arXiv 2503.22973) judges with GPT-4o against GPT-4o-mini references, but its judge
prompt, its handling of position bias, its tie rule, how it scores an answer in the wrong language and its
fine-grained metric set could not be read. Everything below is our choice, following alpaca_eval and Arena-Hard:

* **Prompt** (``prompts/judge_pairwise.jinja``): names the target language and says that an answer written in
  another language fails the instruction. The verdict is a JSON object ``{"winner": "A" | "B" | "tie"}``;
  where the backend enforces JSON schemas (vLLM structured outputs, OpenAI ``response_format``) the verdict is
  constrained to :data:`VERDICT_SCHEMA`, and :func:`parse_verdict` reads it for the backends that cannot.
* **Orders.** ``order="both"`` (default) judges each item twice, model answer shown first and shown second, and
  averages the two preferences (Arena-Hard, MT-Bench); ``order="random"`` judges once, in an order drawn by
  a *content-seeded* RNG (a hash of the seed, the instruction and both answers: alpaca_eval's
  ``RandomSwitchTwoColumnsProcessor``), and un-swaps the verdict afterwards. Either way every judgment is
  stored in the model's frame: ``p_model_wins`` = P(model beats reference), in ``[0, 1]`` (the judgment store keeps it
  under its first name, ``preference``, so that existing caches stay valid; alpaca_eval's ``preference`` is another
  scale, ``[1, 2]``).
* **Soft preferences.** When the backend returns log-probabilities, the preference is read from the
  probabilities of the verdict token's alternatives (``A``, ``B``, ``tie``): P(A better) =
  (P(A) + P(tie)/2) / (P(A) + P(B) + P(tie)), in the manner of alpaca_eval's weighted annotators. Otherwise the
  verdict is discrete: A = 1, B = 0, tie = 0.5.
* **Tie rule.** A tie is worth 0.5 (alpaca_eval's ``preference == 1.5``).
* **Empty answers** are not sent to the judge: an empty (or whitespace-only) model answer loses to a non-empty
  reference (preference 0) and ties an empty one; the row says so (``parse_status="rule:empty_output"``).
* **Unparseable verdicts** are kept with ``p_model_wins=None`` and ``parse_status="unparsed"``; the statistics
  leave them out and count them (``n_unparsed``, parse rate in the report). They are never dropped.
* **Rubric** (``prompts/judge_rubric.jinja``): 1-5 scores on named dimensions (:data:`DEFAULT_DIMENSIONS`:
  helpfulness, relevance, accuracy, fluency, naturalness). The paper reports "several fine-grained quality
  metrics" whose names and scales are unknown; this set is ours.
* **Decoding** is greedy (``temperature=0.0``) by default; the sampling settings are recorded on every row.

**Judgment store.** Judgments go through :func:`xl_suite.runner.run_stage` keyed by content (``key_column``): its
chunk files under ``cache_dir/<stage>/`` are the one store of judgments. Every judged row carries a ``cache_key``
hashing (judge fingerprint, revision, template version, sampling settings, instruction, language, the two outputs,
order); every stored judgment whose key is asked for is reused, whatever run wrote it, and only the others are
judged. So a rerun makes zero judge calls, a changed answer costs only its own judgments, a run killed even by
SIGKILL loses at most the judge calls in flight (the chunk being judged, one call at a time; with overlapping calls,
each finished call is stored at once as a piece of its chunk), and a truncated or corrupt chunk file is detected on
reading, moved aside (``*.corrupt``) and only its items are judged again. A failed judgment (unparsed, empty, a
request error) is judged again on each run up to ``run_stage``'s ``max_attempts`` (3) attempts: the only retry limit.
Caches written by earlier versions (the annotation index over the same chunk files) are read as they are.

Modules: :mod:`~xl_suite.evaluation.judging.parsing` (pure, doctested parsers),
:mod:`~xl_suite.evaluation.judging.config` (:class:`JudgeConfig`), :mod:`~xl_suite.evaluation.judging.requests`
(the one request builder and the prompts), :mod:`~xl_suite.evaluation.judging.batches` (the batched judge
functions), :mod:`~xl_suite.evaluation.judging.judge` (judging through the store, the cost estimate).
"""

from xl_suite.evaluation.judging.batches import JUDGMENT_COLUMNS, RUBRIC_COLUMNS, pairwise_batch, rubric_batch
from xl_suite.evaluation.judging.config import DEFAULT_DIMENSIONS, ORDER_MODES, JudgeConfig, OrderMode
from xl_suite.evaluation.judging.judge import (
    PairwiseJudgments,
    RubricScores,
    estimate_judging_cost,
    judge_pairwise,
    judge_requests,
    load_annotations,
    pairwise_fingerprint,
    rubric_fingerprint,
    score_rubric,
)
from xl_suite.evaluation.judging.parsing import (
    ORDERS,
    VERDICT_SCHEMA,
    Verdict,
    parse_rubric,
    parse_verdict,
    parse_verdict_with_status,
    preference_from_verdict,
    rubric_schema,
    to_model_frame,
    verdict_distribution,
)
from xl_suite.evaluation.judging.requests import (
    choose_order,
    pairwise_requests,
    render_pairwise,
    render_rubric,
    rubric_requests,
)


__all__ = [
    "VERDICT_SCHEMA",
    "DEFAULT_DIMENSIONS",
    "ORDERS",
    "JudgeConfig",
    "PairwiseJudgments",
    "RubricScores",
    "parse_verdict",
    "parse_verdict_with_status",
    "parse_rubric",
    "rubric_schema",
    "verdict_distribution",
    "preference_from_verdict",
    "to_model_frame",
    "choose_order",
    "render_pairwise",
    "render_rubric",
    "judge_pairwise",
    "score_rubric",
    "load_annotations",
]
