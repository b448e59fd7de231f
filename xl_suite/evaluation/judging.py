"""Pairwise and rubric LLM judges for XL-AlpacaEval and m-AlpacaEval, with an on-disk annotation cache.

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
  stored in the model's frame: ``preference`` = P(model beats reference).
* **Soft preferences.** When the backend returns log-probabilities, the preference is read from the
  probabilities of the verdict token's alternatives (``A``, ``B``, ``tie``): P(A better) =
  (P(A) + P(tie)/2) / (P(A) + P(B) + P(tie)), in the manner of alpaca_eval's weighted annotators. Otherwise the
  verdict is discrete: A = 1, B = 0, tie = 0.5.
* **Tie rule.** A tie is worth 0.5 (alpaca_eval's ``preference == 1.5``).
* **Empty answers** are not sent to the judge: an empty (or whitespace-only) model answer loses to a non-empty
  reference (preference 0) and ties an empty one; the row says so (``parse_status="rule:empty_output"``).
* **Unparseable verdicts** are kept with ``preference=None`` and ``parse_status="unparsed"``; the statistics
  leave them out and count them (``n_unparsed``, parse rate in the report). They are never dropped.
* **Rubric** (``prompts/judge_rubric.jinja``): 1-5 scores on named dimensions (:data:`DEFAULT_DIMENSIONS`:
  helpfulness, relevance, accuracy, fluency, naturalness). The paper reports "several fine-grained quality
  metrics" whose names and scales are unknown; this set is ours.
* **Decoding** is greedy (``temperature=0.0``) by default; the sampling settings are recorded on every row.

**Annotation cache.** Judgments go through :func:`xl_suite.runner.run_stage`, whose chunk files under
``cache_dir/<stage>/`` double as the annotation store. Every judged row carries a ``cache_key`` hashing (judge
fingerprint, revision, template version, sampling settings, instruction, language, the two outputs, order).
Before judging, all chunk files of the stage are read and indexed by that key; only the misses are judged. So a
rerun makes zero judge calls, a run killed even by SIGKILL loses at most the judge calls in flight (the chunk being
judged, one call at a time; with overlapping calls, each finished call is stored at once as a piece of its chunk),
and a truncated or corrupt chunk file is detected on reading, moved aside (``*.corrupt``) and only its items are
judged again.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from xl_suite.configuration import option
from xl_suite.engines.base import (
    Completion,
    Generator,
    SamplingConfig,
    row_status,
    truncates_prompts,
)
from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.fingerprint import stable_hash
from xl_suite.json_repair_step import repair_json_object
from xl_suite.languages import LanguageSpec, get_language
from xl_suite.prompting import PromptTemplate, load_template, neutralise_markers
from xl_suite.scoring import parse_scores, parse_scores_with_status, score_schema
from xl_suite.status import FAILED, RowStatus


logger = logging.getLogger(__name__)

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

Verdict = Literal["A", "B", "tie"]
OrderMode = Literal["both", "random"]
#: The two presentation orders: the model's answer shown as A, or as B.
ORDERS: tuple[str, str] = ("model_first", "model_second")
_ORDER_MODES = ("both", "random")

#: JSON schema of the pairwise verdict, enforced where the backend supports structured outputs.
VERDICT_SCHEMA: dict = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["winner"],
    "additionalProperties": False,
}

#: Rubric dimensions (ours; the paper's fine-grained metrics are unknown): name -> what the judge scores.
DEFAULT_DIMENSIONS: dict[str, str] = {
    "helpfulness": "how well the answer meets the user's need: it does what the instruction asks, completely.",
    "relevance": "the answer stays on the instruction's topic and contains nothing unrelated.",
    "accuracy": "the facts, reasoning, calculations and code in the answer are correct.",
    "fluency": "the answer is grammatical, correctly spelt text in the target language.",
    "naturalness": "the answer reads as if a native speaker of the target language wrote it, not as a literal "
    "translation; register and idioms fit.",
}

_PARSE_OK = RowStatus.OK
_PARSE_UNPARSED = RowStatus.UNPARSED
_PARSE_REPAIRED = RowStatus.REPAIRED
_RULE_EMPTY = RowStatus.RULE_EMPTY_OUTPUT


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge is prompted, decoded, cached and priced. Every field is recorded in the report.

    Args:
        template: pairwise template (shipped name or ``.jinja`` path). Default ``"judge_pairwise"``.
        rubric_template: rubric template. Default ``"judge_rubric"``.
        order: ``"both"`` (default: each item judged in both presentation orders, preferences averaged) or
            ``"random"`` (one content-seeded order per item, un-swapped afterwards).
        seed: seed of the content-seeded order RNG and of the judge's sampling. Default 0.
        temperature: judge temperature; 0.0 (default) is greedy decoding.
        max_tokens: token budget of a pairwise verdict. Default 32.
        rubric_max_tokens: token budget of a rubric reply. Default 128.
        logprobs: top log-probabilities to ask for per token (soft preferences); None asks for none. Default 5.
        structured_output: constrain replies to their JSON schema when the backend supports it. Default True.
        rubric: also score the model's answers with the rubric judge. Default True.
        dimensions: rubric dimensions, name -> description. Default :data:`DEFAULT_DIMENSIONS`.
        chunk_size: judgments per resumable cache chunk. A SIGKILL loses at most the judge calls in flight: one
            chunk when calls run one at a time; with an engine that takes concurrent calls (vLLM, HTTP), each
            finished call (``batch_size`` judgments) is stored at once, so the calls in flight. Default 256.
        batch_size: judgments per engine call. Default 64.
        price_input_per_mtok: USD per million prompt tokens, for the cost ledger (None: cost not shown).
        price_output_per_mtok: USD per million completion tokens.
    """

    template: str = option("judge_pairwise", "pairwise template (shipped name or .jinja path)")
    rubric_template: str = option("judge_rubric", "rubric template")
    order: OrderMode = option(
        "both",
        "both presentation orders, preferences averaged; or one content-seeded random order per item",
        choices=_ORDER_MODES,
    )
    seed: int = option(0, "seed of the content-seeded order and of the judge's sampling")
    temperature: float = option(0.0, "judge temperature (0.0: greedy)")
    max_tokens: int = option(32, "token budget of a pairwise verdict")
    rubric_max_tokens: int = option(128, "token budget of a rubric reply")
    logprobs: int | None = option(5, "top log-probabilities per token, for soft preferences (None: none)")
    structured_output: bool = option(True, "constrain replies to their JSON schema when the backend supports it")
    rubric: bool = option(True, "also score the answers with the rubric judge")
    dimensions: dict[str, str] = option(
        default_factory=lambda: dict(DEFAULT_DIMENSIONS),
        help="rubric dimensions (criteria), name -> description",
        cli=False,
    )
    chunk_size: int = option(
        256, "judgments per resumable cache chunk (a SIGKILL loses at most the judge calls in flight)"
    )
    batch_size: int = option(64, "judgments per engine call")
    price_input_per_mtok: float | None = option(None, "USD per million prompt tokens, for the cost ledger")
    price_output_per_mtok: float | None = option(None, "USD per million completion tokens")

    def __post_init__(self):
        """Validate the settings (order, dimension names, sizes, sampling values)."""
        if self.order not in _ORDER_MODES:
            raise InvalidArgumentError(f"order={self.order!r} is not supported; choose one of {list(_ORDER_MODES)}.")
        if not self.dimensions:
            raise InvalidArgumentError(
                "dimensions must name at least one rubric dimension, e.g. {'helpfulness': '...'}."
            )
        bad = [d for d in self.dimensions if not re.fullmatch(r"[a-z][a-z0-9_]*", d)]
        if bad:
            raise InvalidArgumentError(f"Rubric dimension names must be lower_snake_case identifiers, got {bad}.")
        if self.chunk_size < 1 or self.batch_size < 1:
            raise InvalidArgumentError(
                f"chunk_size and batch_size must be >= 1, got {self.chunk_size}, {self.batch_size}."
            )
        object.__setattr__(self, "dimensions", dict(self.dimensions))
        self.pairwise_sampling()  # validates temperature / max_tokens
        self.rubric_sampling()

    def pairwise_sampling(self, *, structured: bool = False) -> SamplingConfig:
        """Sampling settings of the pairwise judge (``json_schema`` set only when ``structured``)."""
        return SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            logprobs=self.logprobs,
            json_schema=VERDICT_SCHEMA if structured else None,
        )

    def rubric_sampling(self, *, structured: bool = False) -> SamplingConfig:
        """Sampling settings of the rubric judge."""
        return SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.rubric_max_tokens,
            seed=self.seed,
            json_schema=rubric_schema(self.dimensions) if structured else None,
        )

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# parsing (pure)

_LABEL_WORDS = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie", "c": "tie"}
_JSON_VERDICT = re.compile(r'"(?:winner|verdict|preference|better|choice)"\s*:\s*"\s*([^"]{0,40}?)\s*"', re.IGNORECASE)
_BRACKET_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_BARE_VERDICT = re.compile(
    r"^\W*(?:(?:answer|output|response|assistant|winner|verdict)\s*[:(]?\s*)?\(?([AB]|tie)\)?"
    r"(?:\s+is\s+better)?\W*$",
    re.IGNORECASE,
)


def _label(value: str) -> str | None:
    """Map a verdict value to ``"A"``, ``"B"`` or ``"tie"`` (None when it is not one).

    >>> _label("Answer B"), _label(" tie "), _label("output (a)"), _label("maybe")
    ('B', 'tie', 'A', None)
    """
    v = re.sub(r"^(?:answer|output|response|assistant)\s*", "", value.strip().lower()).strip(" ()[].")
    return _LABEL_WORDS.get(v) if v != "c" else None


def _find_verdict(text: str) -> tuple[str, int] | None:
    """The verdict label and the character offset where it starts, or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    m = _JSON_VERDICT.search(text)
    if m:
        label = _label(m.group(1))
        return (label, m.start(1)) if label else None
    brackets = {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}
    found = {brackets[mm.group(1).upper()] for mm in _BRACKET_VERDICT.finditer(text)}
    if found:
        if len(found) > 1:
            return None  # "[[A]] ... [[B]]": ambiguous
        return found.pop(), _BRACKET_VERDICT.search(text).start(1)
    stripped = text.strip()
    m = _BARE_VERDICT.match(stripped)
    if m:
        label = _LABEL_WORDS.get(m.group(1).lower())
        offset = len(text) - len(text.lstrip())
        return (label, offset + m.start(1)) if label else None
    return None


def parse_verdict(text: str | None) -> Verdict | None:
    """Read a pairwise verdict; None when it cannot (never guesses, never ``eval``).

    Understands the JSON object the judge template asks for (also inside other text or code fences, and with
    ``verdict``/``preference`` as key), MT-Bench's ``[[A]]``/``[[B]]``/``[[C]]`` (C is a tie), and a bare
    ``A``/``B``/``tie`` (``"Answer A"``, ``"(B)"``, ``"A is better"``). Two different bracketed verdicts are
    ambiguous: None.

    Args:
        text: the judge's raw completion.

    Returns:
        ``"A"``, ``"B"``, ``"tie"`` or None.

    >>> parse_verdict('{"winner": "A"}'), parse_verdict('```json\\n{"winner":"tie"}\\n```')
    ('A', 'tie')
    >>> parse_verdict("My final verdict is [[B]]."), parse_verdict("Answer A"), parse_verdict("[[A]] or [[B]]")
    ('B', 'A', None)
    >>> parse_verdict("I like both."), parse_verdict(""), parse_verdict(None)
    (None, None, None)
    """
    return parse_verdict_with_status(text)[0]


_VERDICT_KEYS = ("winner", "verdict", "preference", "better", "choice")


def parse_verdict_with_status(text: str | None) -> tuple[Verdict | None, str]:
    """:func:`parse_verdict` plus how the reply was read: ``"ok"``, ``"repaired"`` or ``"unparsed"``.

    When the strict reading fails, the JSON repair step (:func:`xl_suite.json_repair_step.repair_json_object`)
    recovers objects that are truncated, single-quoted or have unquoted keys, and the verdict key is read from it.

    >>> parse_verdict_with_status('{"winner": "A"}'), parse_verdict_with_status("{'winner': 'B'}")
    (('A', 'ok'), ('B', 'repaired'))
    >>> parse_verdict_with_status("{'winner': 'tie'"), parse_verdict_with_status('{"winner": "maybe"}')
    (('tie', 'repaired'), (None, 'unparsed'))
    """
    found = _find_verdict(text) if text is not None else None
    if found:
        return found[0], _PARSE_OK  # type: ignore[return-value]
    obj = repair_json_object(text)
    if obj:
        values = [v for k, v in obj.items() if str(k).strip().lower() in _VERDICT_KEYS and isinstance(v, str)]
        label = _label(values[0]) if len(values) == 1 else None
        if label is not None:
            return label, _PARSE_REPAIRED  # type: ignore[return-value]
    return None, _PARSE_UNPARSED


def preference_from_verdict(verdict: str | None) -> float | None:
    """P(answer A is better) from a discrete verdict: A = 1, B = 0, tie = 0.5, None stays None.

    >>> [preference_from_verdict(v) for v in ("A", "B", "tie", None)]
    [1.0, 0.0, 0.5, None]
    """
    return {"A": 1.0, "B": 0.0, "tie": 0.5}.get(verdict) if verdict is not None else None


def to_model_frame(p_a: float | None, order: str) -> float | None:
    """Un-swap: P(answer A better) -> P(model beats reference), given the presentation order.

    >>> to_model_frame(0.8, "model_first"), to_model_frame(0.8, "model_second"), to_model_frame(None, "model_first")
    (0.8, 0.19999999999999996, None)
    """
    if order not in ORDERS:
        raise InvalidArgumentError(f"order={order!r} is not one of {list(ORDERS)}.")
    if p_a is None:
        return None
    return p_a if order == "model_first" else 1.0 - p_a


def _token_label(token: str) -> str | None:
    """Verdict label a single token stands for (``'"A'`` -> A, ``' t'``/``'tie'`` -> tie), else None.

    >>> [_token_label(t) for t in ('"A', " B", '"t', "tie", "x", "")]
    ['A', 'B', 'tie', 'tie', None, None]
    """
    s = token.strip().strip("\"'`[](){}*:.,").strip().lower()
    if s in ("a", "b"):
        return s.upper()
    if s and "tie".startswith(s):
        return "tie"
    return None


def verdict_distribution(
    text: str, tokens: Sequence[str] | None, top_logprobs: Sequence[dict[str, float]] | None
) -> dict[str, float] | None:
    """Probabilities of the verdict labels at the verdict token, renormalised over the labels present.

    The verdict token is the generated token that covers the verdict's first character (tokens are aligned with
    the text when they join to it; otherwise the first token that is the verdict label). Its top alternatives are
    mapped to labels (``A``, ``B``, ``tie``; quotes and spaces ignored) and their probabilities summed. Returns
    None when there is no verdict, no log-probabilities, or the sampled label is not among the alternatives.

    >>> d = verdict_distribution('{"winner": "A"}', ['{"', 'winner', '":', ' "', 'A', '"}'],
    ...                          [{}, {}, {}, {}, {"A": math.log(0.6), "B": math.log(0.3), "x": -1.0}, {}])
    >>> {k: round(v, 3) for k, v in d.items()}
    {'A': 0.667, 'B': 0.333}
    >>> verdict_distribution("A", ["A"], None) is None
    True
    """
    found = _find_verdict(text)
    if found is None or not tokens or not top_logprobs or len(tokens) != len(top_logprobs):
        return None
    label, start = found
    idx = None
    if "".join(tokens) == text:
        pos = 0
        for i, tok in enumerate(tokens):
            if pos + len(tok) > start:
                idx = i
                break
            pos += len(tok)
    if idx is None or _token_label(tokens[idx]) != label:
        idx = next((i for i, tok in enumerate(tokens) if _token_label(tok) == label), None)
    if idx is None:
        return None
    mass: dict[str, float] = {}
    for tok, logprob in (top_logprobs[idx] or {}).items():
        lab = _token_label(tok)
        if lab is not None and logprob is not None and math.isfinite(logprob):
            mass[lab] = mass.get(lab, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if label not in mass or total <= 0:
        return None
    return {k: v / total for k, v in mass.items()}


def _soft_p_a(dist: dict[str, float]) -> float:
    return min(1.0, max(0.0, dist.get("A", 0.0) + 0.5 * dist.get("tie", 0.0)))


# ---------------------------------------------------------------------------------------------------------------
# rendering


def rubric_schema(dimensions: Sequence[str] | dict[str, str]) -> dict:
    """JSON schema of a rubric reply: :func:`xl_suite.scoring.score_schema` over the dimensions (the criteria).

    >>> rubric_schema(["fluency"])["properties"]["fluency"]
    {'type': 'integer', 'minimum': 1, 'maximum': 5}
    """
    return score_schema(dimensions)


def parse_rubric(text: str | None, dimensions: Sequence[str] | dict[str, str]) -> dict[str, int] | None:
    """Read 1-5 scores for every dimension of a rubric reply: :func:`xl_suite.scoring.parse_scores`.

    >>> parse_rubric("Fluency: 3\\nAccuracy: 2", ["accuracy", "fluency"])
    {'accuracy': 2, 'fluency': 3}
    """
    return parse_scores(text, dimensions)


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


# ---------------------------------------------------------------------------------------------------------------
# batched map functions (pure apart from the engine call)


def _judge_identity(generator: Generator) -> dict[str, str | None]:
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
    ``preference`` (P(model beats reference)), ``preference_source`` (``logprobs``/``discrete``),
    ``verdict_probs`` (JSON) and token counts.
    """
    n = len(batch["order"])
    convs = [
        render_pairwise(
            template,
            instruction=batch["instruction"][i],
            output_a=batch["output_a"][i],
            output_b=batch["output_b"][i],
            language=batch["language"][i],
        )
        for i in range(n)
    ]
    completions = generator.generate(convs, sampling) if n else []
    if len(completions) != n:
        raise GenerationError(f"Judge {generator.model!r} returned {len(completions)} results for {n} prompts.")
    out: dict[str, list] = {k: [] for k in _JUDGMENT_COLUMNS}
    ident = _judge_identity(generator)
    for i, cands in enumerate(completions):
        c: Completion = cands[0]
        verdict, how = parse_verdict_with_status(c.text)
        dist = verdict_distribution(c.text, c.tokens, c.top_logprobs) if verdict is not None else None
        p_a = _soft_p_a(dist) if dist is not None else preference_from_verdict(verdict)
        row = {
            **ident,
            "judge_template_version": template.template_version,
            "judge_sampling": sampling.to_json(),
            "raw_completion": c.text,
            "verdict": verdict,
            "parse_status": row_status(c, verdict is not None, _PARSE_UNPARSED),
            "json_repaired": how == _PARSE_REPAIRED,
            "p_a": p_a,
            "preference": to_model_frame(p_a, batch["order"][i]),
            "preference_source": None if verdict is None else ("logprobs" if dist is not None else "discrete"),
            "verdict_probs": json.dumps(dist, sort_keys=True) if dist is not None else None,
            "prompt_tokens": int(c.prompt_tokens or 0),
            "completion_tokens": int(c.completion_tokens or 0),
            "finish_reason": c.finish_reason,
        }
        for k in _JUDGMENT_COLUMNS:
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
        render_rubric(
            template,
            instruction=batch["instruction"][i],
            output=batch["output"][i],
            language=batch["language"][i],
            dimensions=dimensions,
        )
        for i in range(n)
    ]
    completions = generator.generate(convs, sampling) if n else []
    if len(completions) != n:
        raise GenerationError(f"Judge {generator.model!r} returned {len(completions)} results for {n} prompts.")
    ident = _judge_identity(generator)
    out: dict[str, list] = {k: [] for k in _RUBRIC_COLUMNS}
    for cands in completions:
        c = cands[0]
        scores, how = parse_scores_with_status(c.text, dimensions)
        row = {
            **ident,
            "judge_template_version": template.template_version,
            "judge_sampling": sampling.to_json(),
            "raw_completion": c.text,
            "parse_status": row_status(c, bool(scores), _PARSE_UNPARSED),
            "json_repaired": how == _PARSE_REPAIRED,
            "scores": json.dumps(scores, sort_keys=True) if scores else None,
            "prompt_tokens": int(c.prompt_tokens or 0),
            "completion_tokens": int(c.completion_tokens or 0),
            "finish_reason": c.finish_reason,
        }
        for k in _RUBRIC_COLUMNS:
            out[k].append(row[k])
    return out


_JUDGMENT_COLUMNS = (
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
_RUBRIC_COLUMNS = (
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


# ---------------------------------------------------------------------------------------------------------------
# the annotation cache


#: Columns added after annotation caches were first written: their absence does not make a cache file unreadable.
_OPTIONAL_COLUMNS = ("json_repaired",)


def _required(columns: Sequence[str]) -> tuple[str, ...]:
    return tuple(c for c in columns if c not in _OPTIONAL_COLUMNS)


#: Attempts per judgment: an unparsed one is judged again on each run until this many failed ones are stored.
MAX_JUDGE_ATTEMPTS = 3


def load_annotations(
    cache_dir: str | None,
    stage: str,
    *,
    storage_options: dict | None = None,
    required: Sequence[str] = ("cache_key",),
    failed_attempts: dict[str, int] | None = None,
) -> tuple[dict[str, dict], list[str]]:
    """Index the chunk files of a judging stage by ``cache_key``.

    A file that cannot be read back (truncated, corrupt, or missing a required column) is renamed to
    ``<name>.corrupt`` with a warning, so that its items are judged again; the other files stay in use.
    A judgment whose ``parse_status`` is a failure (unparsed) never hides a parsed one of the same key; when a
    ``failed_attempts`` dict is given, it receives per key the number of failed judgments stored (each retry
    stores one), so the caller can retry them up to a cap.

    Returns:
        (cache_key -> stored row, list of the quarantined paths).
    """
    if cache_dir is None:
        return {}, []
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(cache_dir), **(storage_options or {}))
    folder = f"{root.rstrip('/')}/{stage}"
    if not fs.exists(folder):
        return {}, []
    index: dict[str, dict] = {}
    bad: list[str] = []
    from xl_suite.runner import read_verified

    for path in sorted(fs.glob(f"{folder}/*.parquet")):
        table = read_verified(fs, path, required=required, what="Annotation cache file")  # damaged: moved aside
        if table is None:
            bad.append(path)
            continue
        for row in table.to_pylist():
            key = row["cache_key"]
            if row.get("parse_status") in FAILED:
                if failed_attempts is not None:
                    failed_attempts[key] = failed_attempts.get(key, 0) + 1
                if key in index:
                    continue  # a parsed judgment (or an earlier failed one) is already there
            elif key in index and index[key].get("parse_status") not in FAILED:
                pass  # two parsed judgments of one key: keep the first (files in name order)
            else:
                index[key] = row
                continue
            index.setdefault(key, row)
    return index, bad


def _run_cached(
    rows: list[dict],
    function,
    *,
    stage: str,
    fingerprint: str,
    cache_dir: str | None,
    storage_options: dict | None,
    fn_kwargs: dict,
    chunk_size: int,
    batch_size: int,
    required: Sequence[str],
) -> tuple[dict[str, dict], dict]:
    """Judge the rows whose ``cache_key`` is not in the cache; return key -> row for all rows, and counts."""
    import datasets

    from xl_suite.runner import StageStats, run_stage

    t0 = time.perf_counter()
    failed: dict[str, int] = {}
    index, bad = load_annotations(
        cache_dir, stage, storage_options=storage_options, required=required, failed_attempts=failed
    )
    retry = {
        k for k, row in index.items() if row.get("parse_status") in FAILED and failed.get(k, 0) < MAX_JUDGE_ATTEMPTS
    }
    for k in retry:
        del index[k]  # an unparsed judgment is a failure, not a result: judged again (up to the cap)
    todo: dict[str, dict] = {}
    for r in rows:
        if r["cache_key"] not in index:
            todo.setdefault(r["cache_key"], r)  # identical requests are judged once
    n_cached = len({r["cache_key"] for r in rows} - set(todo))
    stats = StageStats(stage=stage)
    computed: dict[str, dict] = {}
    if todo:
        ds = datasets.Dataset.from_list(list(todo.values()))
        result = run_stage(
            ds,
            function,
            stage=stage,
            fingerprint=fingerprint,
            work_dir=cache_dir,
            fn_kwargs=fn_kwargs,
            batch_size=batch_size,
            chunk_size=chunk_size,
            storage_options=storage_options,
            stats=stats,
        )
        computed = {r["cache_key"]: r for r in result.to_list()}
    merged = {**{k: index[k] for k in {r["cache_key"] for r in rows} if k in index}, **computed}
    counts = {
        "retried": len(retry & set(todo)),
        "unique_requests": len({r["cache_key"] for r in rows}),
        "from_cache": n_cached + len(todo) - stats.rows_computed,  # todo rows found in a stored chunk count too
        "judged_now": stats.rows_computed,  # rows sent to the judge in this call (new ones and retried failures)
        "corrupt_files": bad,
        "chunks_computed": stats.chunks_computed,
        "seconds": time.perf_counter() - t0,
        "computed_keys": set(computed),
    }
    return merged, counts


# ---------------------------------------------------------------------------------------------------------------
# high-level judging


@dataclass
class PairwiseJudgments:
    """Result of :func:`judge_pairwise`.

    Attributes:
        rows: one dict per judgment (item x order), with the item fields, the order, every provenance column,
            the parse status and ``cached`` (True when read from the annotation cache).
        preferences: per item, P(model beats reference) after combining the orders (None: no parsed judgment).
        pref_model_first: per item, the preference judged with the model's answer first (None: not judged in
            that order, or unparsed).
        pref_model_second: the same with the model's answer second.
        ledger: requests, cache hits, engine work and tokens (see :func:`judge_pairwise`).
    """

    rows: list[dict]
    preferences: list[float | None]
    pref_model_first: list[float | None]
    pref_model_second: list[float | None]
    ledger: dict[str, Any]


@dataclass
class RubricScores:
    """Result of :func:`score_rubric`: per-item scores (None when unparsed), the rows and a ledger."""

    scores: list[dict[str, int] | None]
    rows: list[dict]
    ledger: dict[str, Any]


def _check_inputs(n: int, named: dict[str, Sequence | None]) -> None:
    for name, seq in named.items():
        if seq is not None and len(seq) != n:
            lengths = {k: len(v) for k, v in named.items() if v is not None}
            raise InvalidArgumentError(f"Inputs must have the same length; got {lengths} ({name} differs).")


def _validate_texts(values: Sequence, name: str, *, allow_empty: bool) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {type(v).__name__}: {v!r}.")
        if not allow_empty and not v.strip():
            raise InvalidArgumentError(f"{name}[{i}] is empty; every item needs a non-empty {name[:-1]}.")


def _ledger_entry(
    rows: list[dict], counts: dict, generator: Generator, config: JudgeConfig, *, rule_count: int
) -> dict:
    unique = list({r["cache_key"]: r for r in rows if r["parse_status"] != _RULE_EMPTY}.values())
    now = [r for r in unique if not r["cached"]]
    cached = [r for r in unique if r["cached"]]
    p_in = sum(r["prompt_tokens"] for r in now)
    p_out = sum(r["completion_tokens"] for r in now)
    entry = {
        "judge_backend": getattr(generator, "backend", None),
        "judge_model": generator.model,
        "judge_revision": getattr(generator, "revision", None),
        "judge_truncate_prompts": truncates_prompts(generator),
        "requests": len(rows),
        "unique_requests": counts["unique_requests"],
        "judged_now": counts["judged_now"],
        "from_cache": counts["from_cache"],
        "rule_based": rule_count,
        # parsed only after the JSON repair step (rows cached before it existed have no flag: not repaired)
        "json_repaired": sum(bool(r.get("json_repaired")) for r in unique),
        # judged from a prompt cut to the judge's context (truncate_prompts): kept, counted apart
        "prompt_truncated": sum(r["parse_status"] == RowStatus.PROMPT_TRUNCATED for r in unique),
        "corrupt_cache_files": len(counts["corrupt_files"]),
        "prompt_tokens": p_in,
        "completion_tokens": p_out,
        "cached_prompt_tokens": sum(r["prompt_tokens"] for r in cached),
        "cached_completion_tokens": sum(r["completion_tokens"] for r in cached),
        "seconds": round(counts["seconds"], 3),
        "cost_usd": None,
    }
    if config.price_input_per_mtok is not None and config.price_output_per_mtok is not None:
        entry["cost_usd"] = (p_in * config.price_input_per_mtok + p_out * config.price_output_per_mtok) / 1e6
    return entry


def _structured(generator: Generator, config: JudgeConfig) -> bool:
    supports = getattr(generator, "supports_structured_output", None)
    return bool(config.structured_output and callable(supports) and supports())


def estimate_judging_cost(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    languages: Sequence[str],
    *,
    config: JudgeConfig,
    judge_model: str,
    price: tuple[float, float] | None = None,
) -> list:
    """What :func:`judge_pairwise` and :func:`score_rubric` would send, before any judge starts.

    Renders every prompt the judge would get (both orders, or the content-seeded one); empty answers are decided
    by rule and cost nothing. Cached judgments are not subtracted: the figure is an upper bound for a rerun.

    Returns:
        :class:`xl_suite.costs.CostEstimate` for the pairwise judge, and for the rubric judge when it is on.
    """
    from xl_suite.costs import estimate_cost

    n = len(instructions)
    pair_convs, rubric_convs = [], []
    for i in range(n):
        if not (model_outputs[i] or "").strip():
            continue
        orders = (
            ORDERS
            if config.order == "both"
            else (choose_order(instructions[i], model_outputs[i], reference_outputs[i], seed=config.seed),)
        )
        for order in orders:
            a, b = (
                (model_outputs[i], reference_outputs[i])
                if order == "model_first"
                else (reference_outputs[i], model_outputs[i])
            )
            pair_convs.append(
                render_pairwise(
                    config.template, instruction=instructions[i], output_a=a, output_b=b, language=languages[i]
                )
            )
        if config.rubric:
            rubric_convs.append(
                render_rubric(
                    config.rubric_template,
                    instruction=instructions[i],
                    output=model_outputs[i],
                    language=languages[i],
                    dimensions=config.dimensions,
                )
            )
    n_empty = sum(not (o or "").strip() for o in model_outputs)
    detail = (
        f"{n} answers ({n_empty} empty, decided by rule) in {len(set(languages))} language(s) x "
        f"{2 if config.order == 'both' else 1} order(s)"
    )
    out = [
        estimate_cost(
            "pairwise judge", judge_model, pair_convs, max_tokens=config.max_tokens, price=price, detail=detail
        )
    ]
    if config.rubric:
        out.append(
            estimate_cost(
                "rubric judge",
                judge_model,
                rubric_convs,
                max_tokens=config.rubric_max_tokens,
                price=price,
                detail=f"{len(rubric_convs)} non-empty answers",
            )
        )
    return out


def judge_pairwise(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    languages: Sequence[str],
    *,
    judge: Generator,
    config: JudgeConfig | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    ids: Sequence[str] | None = None,
) -> PairwiseJudgments:
    """Judge model answers against reference answers, in both orders (or one content-seeded order).

    Args:
        instructions: the prompts as the models saw them.
        model_outputs: the evaluated model's answers (empty answers lose by rule, see the module docstring).
        reference_outputs: the reference answers (must be non-empty).
        languages: target language code (or name) of each item.
        judge: the judge backend (any :class:`~xl_suite.engines.base.Generator`).
        config: judge settings (default :class:`JudgeConfig`).
        cache_dir: annotation cache folder / fsspec URL; None judges in memory (no reuse, no resume).
        storage_options: fsspec options for ``cache_dir``.
        ids: optional item ids, copied onto the rows.

    Returns:
        :class:`PairwiseJudgments`. Its ledger has ``requests`` (judgments asked for), ``unique_requests``,
        ``judged_now`` (sent to the judge in this call), ``from_cache``, ``rule_based``,
        ``corrupt_cache_files``, token counts of this call and of the cached rows, ``seconds`` and ``cost_usd``
        (when the config has prices).

    Raises:
        ValueError: inputs of different lengths, a non-string or empty instruction/reference, an unknown language.
    """
    config = config or JudgeConfig()
    n = len(model_outputs)
    _check_inputs(
        n,
        {
            "instructions": instructions,
            "model_outputs": model_outputs,
            "reference_outputs": reference_outputs,
            "languages": languages,
            "ids": ids,
        },
    )
    if n == 0:
        raise InvalidArgumentError("Nothing to judge: no model outputs given.")
    _validate_texts(instructions, "instructions", allow_empty=False)
    _validate_texts(reference_outputs, "reference_outputs", allow_empty=False)
    _validate_texts(model_outputs, "model_outputs", allow_empty=True)
    codes = [get_language(lang).code for lang in languages]
    template = load_template(config.template)
    structured = _structured(judge, config)
    sampling = config.pairwise_sampling(structured=structured)
    fingerprint = stable_hash(
        "pairwise",
        judge.fingerprint(),
        getattr(judge, "revision", None),
        template.template_version,
        sampling.to_json(),
    )
    stage = f"judge-pairwise-{fingerprint}"

    rows: list[dict] = []
    for i in range(n):
        orders = (
            ORDERS
            if config.order == "both"
            else (choose_order(instructions[i], model_outputs[i], reference_outputs[i], seed=config.seed),)
        )
        for order in orders:
            a, b = (
                (model_outputs[i], reference_outputs[i])
                if order == "model_first"
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
                    "order": order,
                    "output_a": a,
                    "output_b": b,
                    "cache_key": stable_hash(fingerprint, instructions[i], codes[i], a, b, order),
                }
            )
    to_judge = [r for r in rows if r["output_model"].strip()]
    keep = ("cache_key", "instruction", "language", "output_a", "output_b", "order")
    results, counts = _run_cached(
        [{k: r[k] for k in keep} for r in to_judge],
        pairwise_batch,
        stage=stage,
        fingerprint=fingerprint,
        cache_dir=cache_dir,
        storage_options=storage_options,
        fn_kwargs={"generator": judge, "template": template, "sampling": sampling},
        chunk_size=config.chunk_size,
        batch_size=config.batch_size,
        required=("cache_key", *_required(_JUDGMENT_COLUMNS)),
    )
    ident = _judge_identity(judge)
    rule_count = 0
    for r in rows:
        if not r["output_model"].strip():
            rule_count += 1
            p = 0.5 if not r["output_reference"].strip() else 0.0
            p_a = p if r["order"] == "model_first" else 1.0 - p
            r.update(
                {
                    **ident,
                    "judge_template_version": template.template_version,
                    "judge_sampling": sampling.to_json(),
                    "raw_completion": "",
                    "verdict": None,
                    "parse_status": _RULE_EMPTY,
                    "p_a": p_a,
                    "preference": p,
                    "preference_source": "rule",
                    "verdict_probs": None,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "finish_reason": None,
                    "cached": False,
                }
            )
            continue
        stored = results[r["cache_key"]]
        r.update({k: stored[k] if k not in _OPTIONAL_COLUMNS else stored.get(k) for k in _JUDGMENT_COLUMNS})
        r["cached"] = r["cache_key"] not in counts["computed_keys"]
    first: list[float | None] = [None] * n
    second: list[float | None] = [None] * n
    for r in rows:
        (first if r["order"] == "model_first" else second)[r["item_index"]] = r["preference"]
    from xl_suite.evaluation.metrics import combine_orders

    prefs = combine_orders(first, second)
    ledger = _ledger_entry(rows, counts, judge, config, rule_count=rule_count)
    ledger["order"] = config.order
    ledger["structured_output"] = structured
    logger.info(
        "pairwise judge %s: %d judgments, %d judged now, %d from cache, %d unparsed",
        judge.model,
        len(rows),
        counts["judged_now"],
        counts["from_cache"],
        sum(r["parse_status"] == _PARSE_UNPARSED for r in rows),
    )
    return PairwiseJudgments(
        rows=rows, preferences=prefs, pref_model_first=first, pref_model_second=second, ledger=ledger
    )


def score_rubric(
    instructions: Sequence[str],
    outputs: Sequence[str],
    languages: Sequence[str],
    *,
    judge: Generator,
    config: JudgeConfig | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    ids: Sequence[str] | None = None,
) -> RubricScores:
    """Score answers 1-5 on the config's rubric dimensions (cached like :func:`judge_pairwise`).

    An empty answer is not sent to the judge: it scores 1 on every dimension (``parse_status="rule:empty_output"``).
    An unparseable reply gives None for that item; it is counted, never dropped.
    """
    config = config or JudgeConfig()
    n = len(outputs)
    _check_inputs(n, {"instructions": instructions, "outputs": outputs, "languages": languages, "ids": ids})
    _validate_texts(instructions, "instructions", allow_empty=False)
    _validate_texts(outputs, "outputs", allow_empty=True)
    codes = [get_language(lang).code for lang in languages]
    template = load_template(config.rubric_template)
    structured = _structured(judge, config)
    sampling = config.rubric_sampling(structured=structured)
    dims = dict(config.dimensions)
    fingerprint = stable_hash(
        "rubric",
        judge.fingerprint(),
        getattr(judge, "revision", None),
        template.template_version,
        sampling.to_json(),
        dims,
    )
    stage = f"judge-rubric-{fingerprint}"
    rows = [
        {
            "item_index": i,
            "id": str(ids[i]) if ids is not None else str(i),
            "language": codes[i],
            "instruction": instructions[i],
            "output": outputs[i],
            "cache_key": stable_hash(fingerprint, instructions[i], codes[i], outputs[i]),
        }
        for i in range(n)
    ]
    keep = ("cache_key", "instruction", "language", "output")
    results, counts = _run_cached(
        [{k: r[k] for k in keep} for r in rows if r["output"].strip()],
        rubric_batch,
        stage=stage,
        fingerprint=fingerprint,
        cache_dir=cache_dir,
        storage_options=storage_options,
        fn_kwargs={"generator": judge, "template": template, "sampling": sampling, "dimensions": dims},
        chunk_size=config.chunk_size,
        batch_size=config.batch_size,
        required=("cache_key", *_required(_RUBRIC_COLUMNS)),
    )
    ident = _judge_identity(judge)
    scores: list[dict[str, int] | None] = []
    rule_count = 0
    for r in rows:
        if not r["output"].strip():
            rule_count += 1
            s = dict.fromkeys(dims, 1)
            r.update(
                {
                    **ident,
                    "judge_template_version": template.template_version,
                    "judge_sampling": sampling.to_json(),
                    "raw_completion": "",
                    "parse_status": _RULE_EMPTY,
                    "scores": json.dumps(s, sort_keys=True),
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "finish_reason": None,
                    "cached": False,
                }
            )
        else:
            stored = results[r["cache_key"]]
            r.update({k: stored[k] if k not in _OPTIONAL_COLUMNS else stored.get(k) for k in _RUBRIC_COLUMNS})
            r["cached"] = r["cache_key"] not in counts["computed_keys"]
        scores.append(json.loads(r["scores"]) if r["scores"] else None)
    ledger = _ledger_entry(rows, counts, judge, config, rule_count=rule_count)
    ledger["structured_output"] = structured
    return RubricScores(scores=scores, rows=rows, ledger=ledger)
