"""Scoring a model on XL-AlpacaEval / m-AlpacaEval: answers, references, translation, judging, tables, reports.

Every LLM stage (answers, references, m-AlpacaEval translation, pairwise and rubric judging) is a pure batched map
run through :func:`xl_suite.runner.run_stage`: chunked, resumable, fingerprinted by (model, revision, template,
sampling). :func:`evaluate_responses` turns answers into per-language tables (win rate with standard error and a
seeded bootstrap CI, discrete and length-controlled win rates, position and length bias, parse rate, rubric means,
language fidelity) and :func:`write_report` writes them as Markdown, a CSV leaderboard and a PNG plot, with the
judge's token/cost ledger.

Modules: :mod:`~xl_suite.evaluation.answers` (model and reference answers), :mod:`~xl_suite.evaluation.translation`
(m-AlpacaEval), :mod:`~xl_suite.evaluation.files` (answer files), :mod:`~xl_suite.evaluation.judging` (pairwise and
rubric judges, the annotation cache), :mod:`~xl_suite.evaluation.presets` (judge presets),
:mod:`~xl_suite.evaluation.metrics` (win rates and their statistics), :mod:`~xl_suite.evaluation.results`
(per-language tables) and :mod:`~xl_suite.evaluation.report` (report files).

The judge prompt, tie rule, order handling and rubric are our reconstruction (see
:mod:`xl_suite.evaluation.judging`); the paper's are unknown.
"""

from xl_suite.evaluation.answers import (
    DEFAULT_ANSWER_SAMPLING,
    answer_batch,
    generate_answers,
    generate_references,
    reference_batch,
)
from xl_suite.evaluation.files import align_references, read_rows
from xl_suite.evaluation.report import format_table, write_report
from xl_suite.evaluation.results import OVERALL, EvaluationResult, evaluate_responses
from xl_suite.evaluation.translation import (
    DEFAULT_TRANSLATION_SAMPLING,
    english_prompts,
    translate_batch,
    translate_prompts,
    write_m_alpacaeval,
)


__all__ = [
    "DEFAULT_ANSWER_SAMPLING",
    "DEFAULT_TRANSLATION_SAMPLING",
    "OVERALL",
    "answer_batch",
    "reference_batch",
    "generate_answers",
    "generate_references",
    "translate_batch",
    "english_prompts",
    "translate_prompts",
    "write_m_alpacaeval",
    "EvaluationResult",
    "evaluate_responses",
    "format_table",
    "write_report",
    "read_rows",
    "align_references",
]
