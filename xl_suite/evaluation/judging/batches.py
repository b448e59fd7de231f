"""The judges' batched map functions: one engine call per batch, every reply parsed and recorded with its
provenance (judge identity, template version, sampling, raw completion, parse status). Pure apart from the call."""

from __future__ import annotations

import json

from xl_suite.engines.base import Completion, Generator, SamplingConfig, raw_text, row_status
from xl_suite.errors import GenerationError
from xl_suite.evaluation.judging.parsing import (
    parse_verdict_with_status,
    preference_from_verdict,
    soft_p_a,
    to_model_frame,
    verdict_distribution,
)
from xl_suite.evaluation.judging.requests import (
    PAIRWISE_REQUEST_COLUMNS,
    RUBRIC_REQUEST_COLUMNS,
    pairwise_messages,
    rubric_messages,
)
from xl_suite.prompting import PromptTemplate
from xl_suite.scoring import parse_scores_with_status
from xl_suite.status import RowStatus


__all__ = [
    "JUDGMENT_COLUMNS",
    "RUBRIC_COLUMNS",
    "OPTIONAL_COLUMNS",
    "judge_identity",
    "pairwise_batch",
    "rubric_batch",
]


def judge_identity(generator: Generator) -> dict[str, str | None]:
    """The ``judge_backend``, ``judge_model`` and ``judge_revision`` columns of a judged row."""
    return {
        "judge_backend": getattr(generator, "backend", None),
        "judge_model": generator.model,
        "judge_revision": getattr(generator, "revision", None),
    }


def pairwise_batch(
    batch: dict[str, list], *, generator: Generator, template: PromptTemplate, sampling: SamplingConfig
) -> dict[str, list]:
    """Judge a batch of (instruction, output_a, output_b, language, order) rows with one engine call.

    Returns the judgment columns: identity and provenance (``judge_*``, ``judge_template_version``,
    ``judge_sampling``), ``raw_completion``, ``verdict``, ``parse_status``, ``p_a`` (P(A better)),
    ``preference`` (P(model beats reference); :func:`~xl_suite.evaluation.judging.judge_pairwise` returns it as
    ``p_model_wins``, this is the stored name), ``preference_source`` (``logprobs``/``discrete``),
    ``verdict_probs`` (JSON) and token counts.
    """
    n = len(batch["order"])
    convs = [pairwise_messages(template, {k: batch[k][i] for k in PAIRWISE_REQUEST_COLUMNS[1:]}) for i in range(n)]
    completions = generator.generate(convs, sampling) if n else []
    if len(completions) != n:
        raise GenerationError(f"Judge {generator.model!r} returned {len(completions)} results for {n} prompts.")
    out: dict[str, list] = {k: [] for k in JUDGMENT_COLUMNS}
    ident = judge_identity(generator)
    for i, cands in enumerate(completions):
        c: Completion = cands[0]
        verdict, how = parse_verdict_with_status(c.text)
        dist = verdict_distribution(c.text, c.tokens, c.top_logprobs) if verdict is not None else None
        p_a = soft_p_a(dist) if dist is not None else preference_from_verdict(verdict)
        row = {
            **ident,
            "judge_template_version": template.template_version,
            "judge_sampling": sampling.to_json(),
            "raw_completion": raw_text(c),
            "verdict": verdict,
            "parse_status": row_status(c, verdict is not None, RowStatus.UNPARSED),
            "json_repaired": how == RowStatus.REPAIRED,
            "p_a": p_a,
            "preference": to_model_frame(p_a, batch["order"][i]),
            "preference_source": None if verdict is None else ("logprobs" if dist is not None else "discrete"),
            "verdict_probs": json.dumps(dist, sort_keys=True) if dist is not None else None,
            "prompt_tokens": int(c.prompt_tokens or 0),
            "completion_tokens": int(c.completion_tokens or 0),
            "finish_reason": c.finish_reason,
        }
        for k in JUDGMENT_COLUMNS:
            out[k].append(row[k])
    return out


def rubric_batch(
    batch: dict[str, list],
    *,
    generator: Generator,
    template: PromptTemplate,
    sampling: SamplingConfig,
    dimensions: dict[str, str],
) -> dict[str, list]:
    """Score a batch of (instruction, output, language) rows on the rubric with one engine call."""
    n = len(batch["output"])
    convs = [
        rubric_messages(template, {k: batch[k][i] for k in RUBRIC_REQUEST_COLUMNS[1:]}, dimensions) for i in range(n)
    ]
    completions = generator.generate(convs, sampling) if n else []
    if len(completions) != n:
        raise GenerationError(f"Judge {generator.model!r} returned {len(completions)} results for {n} prompts.")
    ident = judge_identity(generator)
    out: dict[str, list] = {k: [] for k in RUBRIC_COLUMNS}
    for cands in completions:
        c = cands[0]
        scores, how = parse_scores_with_status(c.text, dimensions)
        row = {
            **ident,
            "judge_template_version": template.template_version,
            "judge_sampling": sampling.to_json(),
            "raw_completion": raw_text(c),
            "parse_status": row_status(c, bool(scores), RowStatus.UNPARSED),
            "json_repaired": how == RowStatus.REPAIRED,
            "scores": json.dumps(scores, sort_keys=True) if scores else None,
            "prompt_tokens": int(c.prompt_tokens or 0),
            "completion_tokens": int(c.completion_tokens or 0),
            "finish_reason": c.finish_reason,
        }
        for k in RUBRIC_COLUMNS:
            out[k].append(row[k])
    return out


#: The columns a pairwise judgment adds to its request row.
JUDGMENT_COLUMNS = (
    "judge_backend",
    "judge_model",
    "judge_revision",
    "judge_template_version",
    "judge_sampling",
    "raw_completion",
    "verdict",
    "parse_status",
    "json_repaired",
    "p_a",
    "preference",
    "preference_source",
    "verdict_probs",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
)
#: The columns a rubric judgment adds to its request row.
RUBRIC_COLUMNS = (
    "judge_backend",
    "judge_model",
    "judge_revision",
    "judge_template_version",
    "judge_sampling",
    "raw_completion",
    "parse_status",
    "json_repaired",
    "scores",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
)
#: Columns added after judgment caches were first written: a stored judgment without them is still used.
OPTIONAL_COLUMNS = ("json_repaired",)
