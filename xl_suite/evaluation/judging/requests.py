"""What the judges are asked: the one place where judgments are laid out and rendered into chat messages.

:func:`pairwise_requests` and :func:`rubric_requests` turn items into request rows (one per judgment: item x
presentation order for the pairwise judge), each with its content key; :func:`judge_pairwise` and
:func:`score_rubric` send them, :func:`estimate_judging_cost` renders the same rows to count their tokens, so the
estimate and the run can never disagree about what is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from xl_suite.evaluation.judging.config import DEFAULT_DIMENSIONS, OrderMode
from xl_suite.evaluation.judging.parsing import ORDERS
from xl_suite.fingerprint import stable_hash
from xl_suite.languages import LanguageSpec, get_language, language_fingerprint
from xl_suite.prompting import PromptTemplate, load_template, neutralise_markers


__all__ = [
    "PAIRWISE_REQUEST_COLUMNS",
    "RUBRIC_REQUEST_COLUMNS",
    "render_pairwise",
    "render_rubric",
    "choose_order",
    "pairwise_requests",
    "rubric_requests",
    "pairwise_messages",
    "rubric_messages",
    "is_rule_decided",
]

#: The columns of a pairwise request that the judge sees, plus its key: what the judging stage stores per judgment.
PAIRWISE_REQUEST_COLUMNS = ("cache_key", "instruction", "language", "output_a", "output_b", "order")
#: The same for the rubric judge.
RUBRIC_REQUEST_COLUMNS = ("cache_key", "instruction", "language", "output")


def render_pairwise(
    template: str | PromptTemplate, *, instruction: str, output_a: str, output_b: str, language: str | LanguageSpec
) -> list[dict[str, str]]:
    """Chat messages of one pairwise judgment (answers shown as A and B, in that order)."""
    return load_template(template).render(
        instruction=neutralise_markers(instruction),
        output_a=neutralise_markers(output_a),
        output_b=neutralise_markers(output_b),
        language=get_language(language),
    )


def render_rubric(
    template: str | PromptTemplate,
    *,
    instruction: str,
    output: str,
    language: str | LanguageSpec,
    dimensions: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    """Chat messages of one rubric judgment."""
    dims = dimensions or DEFAULT_DIMENSIONS
    return load_template(template).render(
        instruction=neutralise_markers(instruction),
        output=neutralise_markers(output),
        language=get_language(language),
        dimensions=[{"name": k, "description": v} for k, v in dims.items()],
    )


def choose_order(instruction: str, output_model: str, output_reference: str, *, seed: int = 0) -> str:
    """Content-seeded presentation order: the same texts and seed always give the same order.

    >>> choose_order("q", "x", "y") == choose_order("q", "x", "y")
    True
    >>> sorted({choose_order("q", str(i), "y") for i in range(20)})
    ['model_first', 'model_second']
    """
    return ORDERS[int(stable_hash("order", seed, instruction, output_model, output_reference), 16) % 2]


def is_rule_decided(answer: str | None) -> bool:
    """True for an answer the judge never sees: empty or whitespace-only, it loses by rule (and costs nothing).

    >>> is_rule_decided(""), is_rule_decided("  "), is_rule_decided("Hallo")
    (True, True, False)
    """
    return not (answer or "").strip()


def pairwise_requests(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    languages: Sequence[str],
    *,
    order: OrderMode = "both",
    seed: int = 0,
    fingerprint: str = "",
    ids: Sequence[str] | None = None,
) -> list[dict]:
    """One row per pairwise judgment: each item in both presentation orders, or in its content-seeded one.

    A row holds the item (``item_index``, ``id``, ``language`` code, ``instruction``, ``output_model``,
    ``output_reference``), the ``order`` and the answers as shown (``output_a``, ``output_b``), and its
    ``cache_key``: a hash of ``fingerprint`` (the judge, its template and sampling) and everything the judge sees.
    Rows of empty model answers are included (:func:`is_rule_decided`: the caller decides them by rule).

    >>> rows = pairwise_requests(["Q?"], ["mine"], ["ref"], ["de"])
    >>> [(r["order"], r["output_a"], r["output_b"]) for r in rows]
    [('model_first', 'mine', 'ref'), ('model_second', 'ref', 'mine')]
    >>> len(pairwise_requests(["Q?"], ["mine"], ["ref"], ["German"], order="random"))
    1
    """
    codes = [get_language(lang).code for lang in languages]
    keys = language_keys(codes)
    rows: list[dict] = []
    for i in range(len(model_outputs)):
        orders = (
            ORDERS
            if order == "both"
            else (choose_order(instructions[i], model_outputs[i], reference_outputs[i], seed=seed),)
        )
        for o in orders:
            a, b = (
                (model_outputs[i], reference_outputs[i])
                if o == "model_first"
                else (reference_outputs[i], model_outputs[i])
            )
            rows.append(
                {
                    "item_index": i,
                    "id": str(ids[i]) if ids is not None else str(i),
                    "language": codes[i],
                    "instruction": instructions[i],
                    "output_model": model_outputs[i],
                    "output_reference": reference_outputs[i],
                    "order": o,
                    "output_a": a,
                    "output_b": b,
                    "cache_key": stable_hash(fingerprint, instructions[i], keys[i], a, b, o),
                }
            )
    return rows


def rubric_requests(
    instructions: Sequence[str],
    outputs: Sequence[str],
    languages: Sequence[str],
    *,
    fingerprint: str = "",
    ids: Sequence[str] | None = None,
) -> list[dict]:
    """One row per rubric judgment (``item_index``, ``id``, ``language`` code, ``instruction``, ``output``,
    ``cache_key``); rows of empty answers included.

    >>> [r["language"] for r in rubric_requests(["Q?", "Q2"], ["a", ""], ["de", "Maltese"])]
    ['de', 'mt']
    """
    codes = [get_language(lang).code for lang in languages]
    keys = language_keys(codes)
    return [
        {
            "item_index": i,
            "id": str(ids[i]) if ids is not None else str(i),
            "language": codes[i],
            "instruction": instructions[i],
            "output": outputs[i],
            "cache_key": stable_hash(fingerprint, instructions[i], keys[i], outputs[i]),
        }
        for i in range(len(outputs))
    ]


def language_keys(codes: Sequence[str]) -> list[str]:
    """What of each row's language enters its cache key: the code of a built-in language; for another, the code and
    the fingerprint of its definition, so a language redefined (``xl-suite languages add ... --overwrite``: another
    name in the judge prompt) is judged again, not served from its earlier definition's judgments.

    >>> language_keys(["de", "mt", "de"])
    ['de', 'mt', 'de']
    """
    memo: dict[str, str] = {}
    for code in codes:
        if code not in memo:
            definition = language_fingerprint([code])
            memo[code] = f"{code}@{definition}" if definition else code
    return [memo[c] for c in codes]


def pairwise_messages(template: str | PromptTemplate, row: dict) -> list[dict[str, str]]:
    """The chat messages of one pairwise request row (or a batch's row)."""
    return render_pairwise(
        template,
        instruction=row["instruction"],
        output_a=row["output_a"],
        output_b=row["output_b"],
        language=row["language"],
    )


def rubric_messages(
    template: str | PromptTemplate, row: dict, dimensions: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """The chat messages of one rubric request row."""
    return render_rubric(
        template, instruction=row["instruction"], output=row["output"], language=row["language"], dimensions=dimensions
    )
