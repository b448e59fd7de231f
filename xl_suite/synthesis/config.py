"""How a synthesis run is configured and checked: :class:`SynthesisConfig`, :class:`Stage`, the default stage
list, fingerprints, and the checks made before any engine starts (:func:`preflight`)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xl_suite.configuration import option
from xl_suite.engines.base import SamplingConfig
from xl_suite.errors import InvalidArgumentError
from xl_suite.fingerprint import function_id, stable_hash
from xl_suite.languages import get_language, resolve_languages
from xl_suite.scoring import SCORE_SCALE, criteria_list, score_schema
from xl_suite.synthesis.decontamination import (
    NEAR_DUP_THRESHOLD,
    NGRAM,
    OVERLAP_THRESHOLD,
    Benchmark,
    decontaminate_batch,
    resolve_benchmark,
)
from xl_suite.synthesis.stages import (
    backtranslate_batch,
    expand_languages_batch,
    judge_batch,
    language_check_batch,
    refine_batch,
    respond_batch,
    score_batch,
    score_filter_batch,
)


logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHESIS_VERSION",
    "EN_CRITERIA",
    "TARGET_CRITERIA",
    "Stage",
    "SynthesisConfig",
    "SynthesisRunOptions",
    "DEFAULT_STAGE_NAMES",
    "default_stages",
    "apply_template_overrides",
    "stage_fingerprint",
    "check_templates",
    "check_wiring",
    "SEED_COLUMNS",
    "preflight",
]

#: Bump when a built-in stage function changes its output for the same input (part of every stage fingerprint).
SYNTHESIS_VERSION = "1"


#: Criteria of the English ``score`` stage (reconstruction: the paper's criteria are not known).
EN_CRITERIA: dict[str, str] = {
    "instruction_quality": "the instruction is clear, self-contained and something a real user would ask",
    "relevance": "the response addresses exactly what the instruction asks",
    "helpfulness": "the response is complete, informative and genuinely useful",
    "accuracy": "the response contains no factual errors, contradictions or made-up details",
    "fluency": "the response is well written, coherent and well organised",
}


#: Criteria of the ``judge`` stage that picks the best target-language candidate (reconstruction).
TARGET_CRITERIA: dict[str, str] = {
    "relevance": "the answer addresses exactly what the instruction asks",
    "helpfulness": "the answer is complete, informative and genuinely useful",
    "accuracy": "the answer is factually correct and consistent with the English reference answer",
    "fluency": "the answer reads naturally and grammatically, as a native speaker would write it",
    "target_language": "the answer is written entirely in the requested language",
}


def _template_override(text: str) -> tuple[str, str]:
    """``STAGE=PATH`` of ``--template``.

    >>> _template_override("score=my_score.jinja")
    ('score', 'my_score.jinja')
    """
    import argparse

    stage, sep, path = str(text).partition("=")
    if not sep or not stage.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--template expects STAGE=PATH (e.g. score=my_score.jinja), got {text!r}")
    return stage.strip(), path.strip()


def _json_object(text: str) -> dict:
    """A JSON object flag (``--criteria``).

    >>> _json_object('{"fluency": "reads well"}')
    {'fluency': 'reads well'}
    """
    import argparse

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e.msg})") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SNAPSHOTS = ("scored", "bestof3")
_ENGINES = ("generator", "scorer")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a pure batched function plus what it needs.

    Args:
        name: unique stage name (also the folder of its chunks in the work dir); lower case, digits, ``_``.
        function: ``(batch, *, generator, template, sampling, **params) -> dict[str, list]`` for LLM stages,
            ``(batch, **params) -> dict[str, list]`` otherwise.
        template: template name or ``.jinja`` path (LLM stages only).
        sampling: decoding settings (LLM stages only).
        engine: ``"generator"`` or ``"scorer"`` (which engine the stage calls), ``None`` for non-LLM stages.
        params: extra keyword arguments; must be JSON-serialisable (they are part of the fingerprint).
        prefix: prefix of the stage's ``_status``/``_prompt_tokens``/``_completion_tokens`` columns, read for the
            summary (default: ``name``).
        keep: a column; after the stage, rows are kept where it is True or ``"ok"`` (dropped rows are counted).
        reshape: the function changes the row count and returns every column (run with ``remove_columns``).
        snapshot: ``"scored"`` or ``"bestof3"``: write the stage's kept rows in that release shape.
        version: bump when the function's behaviour changes (part of the fingerprint).
        inputs: columns the stage reads (default: the function's ``inputs`` attribute; ``None`` when undeclared).
        outputs: columns the stage adds (default: the function's ``outputs`` attribute; ``None`` when undeclared,
            which stops the wiring check for the stages after it). Neither is part of the fingerprint.
    """

    name: str
    function: Callable[..., dict]
    template: str | None = None
    sampling: SamplingConfig | None = None
    engine: str | None = None
    params: dict = field(default_factory=dict)
    prefix: str | None = None
    keep: str | None = None
    reshape: bool = False
    snapshot: str | None = None
    version: str = "1"
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None

    def __post_init__(self):
        for name in ("inputs", "outputs"):
            value = getattr(self, name)
            if value is None:
                value = getattr(self.function, name, None)
            object.__setattr__(self, name, tuple(value) if value is not None else None)
        if not _STAGE_NAME_RE.match(self.name or ""):
            raise InvalidArgumentError(f"Invalid stage name {self.name!r}: use lower-case letters, digits and '_'.")
        if self.engine not in (None, *_ENGINES):
            raise InvalidArgumentError(
                f"Stage {self.name!r}: engine must be one of {list(_ENGINES)} or None, got {self.engine!r}."
            )
        if self.engine and (self.template is None or self.sampling is None):
            raise InvalidArgumentError(
                f"Stage {self.name!r} calls an engine: it needs a template and a sampling config."
            )
        if self.snapshot not in (None, *_SNAPSHOTS):
            raise InvalidArgumentError(
                f"Stage {self.name!r}: snapshot must be one of {list(_SNAPSHOTS)} or None, got {self.snapshot!r}."
            )
        try:
            json.dumps(self.params, sort_keys=True)
        except TypeError as e:
            raise InvalidArgumentError(
                f"Stage {self.name!r}: params must be JSON-serialisable (they are fingerprinted): {e}"
            ) from e

    @property
    def column_prefix(self) -> str:
        """Prefix of the stage's status and token columns."""
        return self.prefix or self.name


@dataclass
class SynthesisConfig:
    """Settings of a synthesis run (every field is recorded in ``summary.json``).

    Args:
        languages: target language codes (default: the paper's 8 core languages).
        num_examples: final pairs wanted per language (``None``: as many as the seeds give). When fewer survive,
            the shortfall is reported; the run never loops to make up for it.
        max_seeds: seed passages to use at most (default: ``ceil(num_examples * oversample)``, or all seeds).
        oversample: seeds per wanted example when ``max_seeds`` is not given (default 4.0).
        n_candidates: target-language candidates per pair (best-of-n; default 3).
        threshold: minimum aggregate English score (1-5) to keep a pair (default 3.5).
        aggregate: ``"mean"`` (default) or ``"min"`` over the criteria.
        target_threshold: minimum aggregate score of the best candidate (default ``None``: the best is kept).
        language_filter: drop answers not identified as the target language (default True). ``False`` keeps them
            and only records the identification (for demos with a tiny random model; the counts are reported).
        min_language_prob: minimum identifier probability for the language check (default 0.5).
        dedup: remove exact duplicates (normalised instruction or response, per language) (default True).
        near_dedup: also remove near-duplicates, by MinHash LSH over character 5-grams (default True).
        near_dedup_threshold: estimated Jaccard similarity from which a row is a near-duplicate (default 0.8).
        decontaminate: drop pairs in which a benchmark prompt is found (n-gram overlap, see
            :mod:`xl_suite.synthesis.decontamination`) (default True). ``False`` is recorded in the summary.
        decontaminate_against: benchmark prompt files (AlpacaEval/m-AlpacaEval JSON, JSONL or Parquet; default
            ``()``: AlpacaEval's prompts from the Hub, else the built-in sample, which the summary then says).
        decontamination_ngram: word n-gram length of the overlap rule (default 8, as Tulu 3).
        decontamination_threshold: share of a prompt's n-grams that must be found (default 0.5, as Tulu 3).
        max_tokens: maximum new tokens per completion, every stage (default 512).
        temperature: sampling temperature of the candidates (default 0.8; the other stages are greedy).
        top_p: nucleus mass of the candidates (default 0.95).
        seed: sampling seed (default 0).
        batch_size: rows per engine call (default 256).
        chunk_size: rows per resumable chunk (default 1024).
        templates: stage name -> template name or ``.jinja`` path, replacing the shipped template.
        criteria: criteria of the English ``score`` stage (default :data:`EN_CRITERIA`).
        target_criteria: criteria of the ``judge`` stage (default :data:`TARGET_CRITERIA`).
    """

    languages: tuple[str, ...] = option(
        ("de", "pt", "hu", "lt", "ga", "mt", "zh", "hi"),
        "target languages, comma-separated (e.g. mt,sw)",
        required=True,
    )
    num_examples: int | None = option(
        None, "final pairs wanted per language (default: all the seeds give); a shortfall is reported"
    )
    max_seeds: int | None = option(None, "seed passages used at most (default: num-examples x oversample, or all)")
    oversample: float = option(4.0, "seeds per wanted example without --max-seeds")
    n_candidates: int = option(3, "target-language candidates per pair (best-of-n)")
    threshold: float = option(3.5, "minimum English score (1-5) to keep a pair")
    aggregate: str = option("mean", "how criteria scores combine", choices=("mean", "min"))
    target_threshold: float | None = option(
        None, "minimum score of the best candidate (default: keep the best whatever its score)"
    )
    language_filter: bool = option(
        True, "drop answers not identified as the target language (the check is recorded and reported either way)"
    )
    min_language_prob: float = option(0.5, "minimum language-identifier probability")
    dedup: bool = option(True, "remove duplicate instructions/answers")
    near_dedup: bool = option(True, "also remove near-duplicates (MinHash LSH, character 5-grams)")
    near_dedup_threshold: float = option(NEAR_DUP_THRESHOLD, "Jaccard similarity from which a row is a near-duplicate")
    decontaminate: bool = option(
        True, "drop pairs in which a benchmark prompt is found (n-gram overlap); turning it off is reported"
    )
    decontaminate_against: tuple[str, ...] = option(
        default_factory=tuple,
        help="benchmark prompts file (AlpacaEval/m-AlpacaEval JSON, JSONL or Parquet; repeatable; default: "
        "AlpacaEval from the Hub, else the built-in sample, as the summary says)",
        metavar="PATH",
        append=True,
    )
    decontamination_ngram: int = option(NGRAM, "word n-gram length of the decontamination rule")
    decontamination_threshold: float = option(
        OVERLAP_THRESHOLD, "share of a benchmark prompt's n-grams that marks a pair as contaminated"
    )
    max_tokens: int = option(512, "maximum new tokens per completion")
    temperature: float = option(0.8, "temperature of the candidates (the other stages are greedy)")
    top_p: float = option(0.95, "nucleus mass of the candidates")
    seed: int = option(0, "sampling seed")
    batch_size: int = option(256, "prompts per engine call")
    chunk_size: int = option(1024, "rows per resumable chunk")
    templates: dict[str, str] = option(
        default_factory=dict,
        help="replace a stage's template (repeatable): backtranslate, refine, score, respond, judge",
        flag="--template",
        metavar="STAGE=PATH",
        parse=_template_override,
        append=True,
    )
    criteria: dict[str, str] = option(
        default_factory=lambda: dict(EN_CRITERIA),
        help="criteria of the score stage, a JSON object of name -> description",
        metavar="JSON",
        parse=_json_object,
    )
    target_criteria: dict[str, str] = option(
        default_factory=lambda: dict(TARGET_CRITERIA),
        help="criteria of the judge stage, a JSON object of name -> description",
        metavar="JSON",
        parse=_json_object,
    )

    def __post_init__(self):
        if isinstance(self.templates, (list, tuple)):  # CLI: repeated STAGE=PATH pairs
            import argparse

            try:
                pairs = [_template_override(p) if isinstance(p, str) else tuple(p) for p in self.templates]
            except argparse.ArgumentTypeError as e:
                raise InvalidArgumentError(str(e)) from e
            self.templates = dict(pairs)
            if len(self.templates) != len(pairs):
                raise InvalidArgumentError(f"--template given twice for the same stage: {pairs}")
        if isinstance(self.decontaminate_against, str):
            self.decontaminate_against = (self.decontaminate_against,)
        self.decontaminate_against = tuple(str(p) for p in self.decontaminate_against or ())
        if not 0 < self.near_dedup_threshold <= 1:
            raise InvalidArgumentError(f"near_dedup_threshold must be in (0, 1], got {self.near_dedup_threshold}.")
        if not 0 < self.decontamination_threshold <= 1:
            raise InvalidArgumentError(
                f"decontamination_threshold must be in (0, 1], got {self.decontamination_threshold}."
            )
        if self.decontamination_ngram < 1:
            raise InvalidArgumentError(f"decontamination_ngram must be >= 1, got {self.decontamination_ngram}.")
        if isinstance(self.languages, str):
            self.languages = tuple(c.strip() for c in self.languages.split(",") if c.strip())
        self.languages = tuple(s.code for s in resolve_languages(list(self.languages)))
        if self.num_examples is not None and self.num_examples < 1:
            raise InvalidArgumentError(f"num_examples must be >= 1 (or None for all), got {self.num_examples}.")
        if self.max_seeds is not None and self.max_seeds < 1:
            raise InvalidArgumentError(f"max_seeds must be >= 1 (or None), got {self.max_seeds}.")
        if self.oversample < 1:
            raise InvalidArgumentError(f"oversample must be >= 1, got {self.oversample}.")
        if self.n_candidates < 1:
            raise InvalidArgumentError(f"n_candidates must be >= 1, got {self.n_candidates}.")
        lo, hi = SCORE_SCALE
        for name in ("threshold", "target_threshold"):
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                raise InvalidArgumentError(f"{name} must be within the score scale {SCORE_SCALE}, got {value}.")
        if self.aggregate not in ("mean", "min"):
            raise InvalidArgumentError(f"aggregate must be 'mean' or 'min', got {self.aggregate!r}.")
        if not 0 <= self.min_language_prob <= 1:
            raise InvalidArgumentError(f"min_language_prob must be in [0, 1], got {self.min_language_prob}.")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise InvalidArgumentError(
                f"batch_size and chunk_size must be >= 1, got {self.batch_size}, {self.chunk_size}."
            )
        for name in ("criteria", "target_criteria"):
            crit = getattr(self, name)
            if not crit or not all(isinstance(k, str) and k for k in crit):
                raise InvalidArgumentError(
                    f"{name} must be a non-empty dict of criterion name -> description, got {crit!r}."
                )
        SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)  # validates

    @property
    def seed_limit(self) -> int | None:
        """Seeds used at most: ``max_seeds``, else ``ceil(num_examples * oversample)``, else ``None`` (all)."""
        if self.max_seeds is not None:
            return self.max_seeds
        if self.num_examples is not None:
            return math.ceil(self.num_examples * self.oversample)
        return None

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_file(cls, path: str) -> SynthesisConfig:
        """Read the settings from a YAML/JSON file (unknown keys are an error)."""
        from xl_suite.configuration import from_mapping, read_config_file

        return from_mapping(cls, read_config_file(path), source=str(path))


@dataclass
class SynthesisRunOptions:
    """Where a synthesis run reads its seeds and writes its files (the I/O half of ``xl-suite synthesize``)."""

    seeds: str = option(
        "builtin",
        "seed passages: 'builtin' (40 project-written passages), a file/folder path or "
        "fsspec URL (.jsonl/.json/.parquet/.csv/.txt), or a Hub dataset id",
    )
    text_column: str = option("text", "column of the seed dataset holding the passages")
    id_column: str | None = option(None, "column with row ids (default: 'id' when present)")
    seeds_config: str | None = option(None, "config (subset) of a Hub seed dataset")
    seeds_split: str = option("train", "split of a Hub seed dataset")
    output: str | None = option(None, "output folder or fsspec URL", required=True, metavar="DIR")
    overwrite: bool = option(
        False,
        "replace the output of another run in DIR (its files and chunk cache are deleted first); rerunning the same "
        "command resumes without it",
    )
    work_dir: str | None = option(None, "resumable chunk folder/URL (default: OUTPUT/.xl_suite_work)")
    storage_options: dict | str | None = option(
        None, "fsspec storage options (JSON) for seeds, output and work dir", metavar="JSON"
    )
    push: str | None = option(
        None, "push each language as config xl-instruct-<code> to this Hub dataset repo", metavar="REPO_ID"
    )
    private: bool = option(False, "with --push: create the repo as private")
    progress: bool = option(True, "show a progress bar over the seeds")
    dry_run: bool = option(
        False,
        "print the requests and tokens of each stage (upper bounds), dollars for API models and engine-hours for "
        "local ones (--tokens-per-second), then stop: no engine starts, nothing is written",
    )
    tokens_per_second: float | None = option(
        None, "generated tokens per second of your local engine, for the engine-hours of --dry-run"
    )
    retry_failed: bool = option(
        False,
        "try the stored failed rows again even when they used all 3 attempts (after an outage; a plain rerun "
        "retries only rows with attempts left)",
    )
    executor: str = option(
        "local",
        "where the engine work runs: local (this process) or ray (a pool of Ray actors: the running cluster, "
        "else a local Ray runtime; pip install 'xl-suite[ray]')",
        choices=("local", "ray"),
    )
    num_actors: int = option(1, "with --executor ray: engine actors (each holds its own engine)")
    num_gpus_per_actor: float = option(0.0, "with --executor ray: GPUs each actor requests (e.g. 1)")
    ray_address: str | None = option(
        None,
        "with --executor ray: the Ray cluster to join (default: the running one, found as ray.init(address='auto') "
        "finds it, else a local runtime for this run; 'local': always a local runtime)",
    )
    max_error_rate: float = option(
        0.05,
        "largest share of failed rows (unparsed, empty, error, too long) that still exits 0; above it the run "
        "writes everything and exits 3 (rerun to retry the failed rows)",
    )

    def __post_init__(self):
        from xl_suite.configuration import parse_json_object
        from xl_suite.costs import check_tokens_per_second
        from xl_suite.runner import check_error_rate_value

        check_error_rate_value(self.max_error_rate)
        check_tokens_per_second(self.tokens_per_second)

        self.storage_options = parse_json_object(self.storage_options, "--storage-options") or None
        if self.private and not self.push:
            raise InvalidArgumentError("--private only applies with --push REPO_ID.")


#: Built-in stage names, in order.
DEFAULT_STAGE_NAMES = (
    "backtranslate",
    "refine",
    "decontaminate",
    "score",
    "score_filter",
    "expand",
    "respond",
    "judge",
    "language_check",
    "decontaminate_target",
)


def default_stages(
    config: SynthesisConfig, generator=None, scorer=None, *, benchmark: Benchmark | None = None
) -> list[Stage]:
    """The reconstructed XL-Instruct stages (see the module docstring), configured from ``config``.

    ``generator``/``scorer`` are only asked whether they support structured outputs: if the scorer does, the
    scoring stages are constrained to :func:`score_schema`. ``benchmark`` holds the prompts of the two
    decontamination stages (``decontaminate`` after ``refine``: instruction and English answer; and
    ``decontaminate_target`` at the end: the target-language answer); by default it is resolved from
    ``config`` (:func:`~xl_suite.synthesis.decontamination.resolve_benchmark`). With ``config.decontaminate``
    False both stages are left out (and the summary says so).

    Raises:
        ValueError: ``config.templates`` names a stage that does not exist or has no template.
    """
    scorer = scorer or generator
    structured = bool(scorer is not None and scorer.supports_structured_output())
    greedy = SamplingConfig(temperature=0.0, max_tokens=config.max_tokens, seed=config.seed)
    scoring = replace(greedy, json_schema=score_schema(config.criteria) if structured else None)
    judging = replace(greedy, json_schema=score_schema(config.target_criteria) if structured else None)
    candidates = SamplingConfig(
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        n=config.n_candidates,
        seed=config.seed,
    )
    if benchmark is None and config.decontaminate:
        benchmark = resolve_benchmark(config.decontaminate_against)

    def decontaminate(name: str, columns: list[str]) -> Stage:
        params = {
            "columns": columns,
            "prompts": list(benchmark.prompts),
            "prompt_ids": list(benchmark.ids),
            "n": config.decontamination_ngram,
            "threshold": config.decontamination_threshold,
        }
        return Stage(
            name,
            decontaminate_batch,
            params=params,
            keep="decontaminated",
            prefix="contamination",
            inputs=tuple(columns),
        )

    stages = [
        Stage(
            "backtranslate",
            backtranslate_batch,
            "synth_backtranslate",
            greedy,
            "generator",
            keep="backtranslate_status",
        ),
        Stage("refine", refine_batch, "synth_refine", greedy, "generator", keep="refine_status"),
        decontaminate("decontaminate", ["instruction", "response_en"]) if config.decontaminate else None,
        Stage(
            "score",
            score_batch,
            "synth_score",
            scoring,
            "scorer",
            params={"criteria": dict(config.criteria), "aggregate": config.aggregate},
            snapshot="scored",
            version="2",  # 2: score_repaired (replies read only after the JSON repair step)
        ),
        Stage("score_filter", score_filter_batch, params={"threshold": config.threshold}, keep="score_passed"),
        Stage("expand", expand_languages_batch, params={"languages": list(config.languages)}, reshape=True),
        Stage("respond", respond_batch, "synth_respond", candidates, "generator"),
        Stage(
            "judge",
            judge_batch,
            "synth_judge",
            judging,
            "scorer",
            params={
                "criteria": dict(config.target_criteria),
                "aggregate": config.aggregate,
                "threshold": config.target_threshold,
            },
            keep="judge_passed",
            snapshot="bestof3",
            version="2",  # 2: judge_repaired
        ),
        Stage(
            "language_check",
            language_check_batch,
            keep="language_passed",
            prefix="language",
            version="2",
            params={"enabled": config.language_filter, "min_language_prob": config.min_language_prob},
        ),
        decontaminate("decontaminate_target", ["response"]) if config.decontaminate else None,
    ]
    return apply_template_overrides([s for s in stages if s is not None], config.templates)


def apply_template_overrides(stages: Sequence[Stage], templates: Mapping[str, str]) -> list[Stage]:
    """Replace the templates of named stages (``{"score": "my_score.jinja"}``).

    Raises:
        ValueError: a name that is not an LLM stage of ``stages``.
    """
    llm = {s.name for s in stages if s.template is not None}
    unknown = sorted(set(templates) - llm)
    if unknown:
        raise InvalidArgumentError(
            f"Template overrides for unknown stages {unknown}; stages with a template: {sorted(llm)}."
        )
    return [replace(s, template=str(templates[s.name])) if s.name in templates else s for s in stages]


def stage_fingerprint(stage: Stage, template=None, engine=None) -> str:
    """Stable hash of everything that changes a stage's output: stage name/version/function, template
    (name, version, sha), sampling JSON (seed included), params, and the engine's fingerprint and revision.
    """
    fn = function_id(stage.function)
    return stable_hash(
        "xl-suite-synthesis",
        SYNTHESIS_VERSION,
        stage.name,
        stage.version,
        fn,
        template.template_version if template is not None else None,
        stage.sampling.to_json() if stage.sampling is not None else None,
        json.dumps(stage.params, sort_keys=True),
        engine.fingerprint() if engine is not None else None,
        getattr(engine, "revision", None) if engine is not None else None,
        stage.reshape,
        stage.keep,
    )


_EXAMPLE_VARIABLES = {
    "passage": "An example passage about gardening.",
    "instruction": "How do I grow tomatoes?",
    "response": "Plant them in a sunny spot.",
    "reference": "Plant them in a sunny spot.",
    "criteria": criteria_list(EN_CRITERIA),
    "scale_min": SCORE_SCALE[0],
    "scale_max": SCORE_SCALE[1],
}


def check_templates(stages: Sequence[Stage], templates: Mapping[str, Any], language: str = "de") -> None:
    """Render every LLM stage's template once with example values, before any generation.

    A template that uses a variable its stage does not pass fails here with the StrictUndefined error naming it.
    """
    for stage in stages:
        names = getattr(stage.function, "template_variables", None)
        if stage.template is None or names is None:
            continue
        values = {k: (get_language(language) if k == "language" else _EXAMPLE_VARIABLES[k]) for k in names}
        templates[stage.name].render(**values)


#: Columns of a prepared seed chunk (:func:`xl_suite.synthesis.seeds.iter_seed_chunks`).
SEED_COLUMNS = ("seed_id", "seed_text")


def check_wiring(stages: Sequence[Stage], columns: Sequence[str] = SEED_COLUMNS) -> None:
    """Check, before any engine starts, that each stage's inputs exist when it runs.

    A stage may read the seed ``columns`` and the outputs of the stages before it (all of them: a ``reshape``
    stage returns every column). A stage that does not declare its outputs ends the check: what comes after it is
    not known.

    >>> from xl_suite.synthesis.stages import score_filter_batch
    >>> check_wiring([Stage("f", score_filter_batch, params={"threshold": 4.0}, keep="score_passed")])
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Stage 'f' reads ['score_mean'], which neither the input columns nor an earlier stage provide (available: ['seed_id', 'seed_text']). Reorder the stages, or declare the inputs/outputs of custom stages (Stage(..., inputs=..., outputs=...)).
    """
    available = set(columns)
    for stage in stages:
        missing = [c for c in (stage.inputs or ()) if c not in available]
        if missing:
            raise InvalidArgumentError(
                f"Stage {stage.name!r} reads {missing}, which neither the input columns nor an earlier stage provide "
                f"(available: {sorted(available)}). Reorder the stages, or declare the inputs/outputs of custom "
                "stages (Stage(..., inputs=..., outputs=...))."
            )
        if stage.outputs is None:
            return
        if stage.keep and stage.keep not in stage.outputs and stage.keep not in available:
            raise InvalidArgumentError(
                f"Stage {stage.name!r} keeps rows by column {stage.keep!r}, which it does not output "
                f"(outputs: {list(stage.outputs)}). Name one of its output columns in keep=."
            )
        available |= set(stage.outputs)


def preflight(config: SynthesisConfig, stages: Sequence[Stage] | None = None) -> dict[str, Any]:
    """Check everything that can be checked before an engine starts; return the loaded templates.

    Checks the stages' column wiring (:func:`check_wiring`), loads every stage template (a missing file fails, naming it), renders each once with example values (an
    undefined variable fails, naming it), loads the offline language identifier when a ``language_check`` stage
    is present and, when the language filter is on, checks that it can recognise every target language.
    """
    from xl_suite.prompting import load_template

    stages = list(stages) if stages is not None else default_stages(config)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"Stage names must be unique, got {names}.")
    check_wiring(stages)
    templates = {s.name: load_template(s.template) for s in stages if s.template is not None}
    check_templates(stages, templates, language=config.languages[0])
    if any(s.function is language_check_batch for s in stages):
        from xl_suite.fidelity import check_language_filter

        support = check_language_filter(config.languages, enabled=config.language_filter)  # loads the identifiers
        if not all(s.supported for s in support):
            logger.warning(
                "The language identifiers cannot recognise %s; their check reports n/a (the filter is off).",
                [s.code for s in support if not s.supported],
            )
    return templates
