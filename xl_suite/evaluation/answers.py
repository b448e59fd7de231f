"""A model's answers and a reference model's answers to benchmark prompts, as resumable batched maps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xl_suite.configuration import option
from xl_suite.engines.base import Generator, SamplingConfig, row_status
from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.fingerprint import stable_hash
from xl_suite.prompting import PromptTemplate, load_template


__all__ = [
    "BatchGenerationConfig",
    "GenerateConfig",
    "DEFAULT_ANSWER_SAMPLING",
    "answer_batch",
    "reference_batch",
    "generate_answers",
    "generate_references",
    "engine_provenance",
    "model_label",
    "complete_first",
    "generation_fingerprint",
    "require_columns",
    "usable_rows",
]

#: Greedy decoding for answers and references unless the caller says otherwise (recorded on every row).
DEFAULT_ANSWER_SAMPLING = SamplingConfig(temperature=0.0, max_tokens=1024)


@dataclass
class BatchGenerationConfig:
    """Decoding, chunking and output settings shared by the answer, reference and translation jobs."""

    output: str | None = option(None, "output folder", required=True, metavar="DIR")
    overwrite: bool = option(False, "replace existing output files")
    temperature: float = option(0.0, "sampling temperature (0.0: greedy)")
    top_p: float = option(1.0, "nucleus mass")
    max_tokens: int = option(1024, "tokens per completion")
    seed: int = option(0, "sampling seed")
    work_dir: str | None = option(
        None, "resumable chunk folder or fsspec URL (default: OUTPUT/.work); a rerun reuses finished chunks"
    )
    chunk_size: int = option(256, "rows per resumable chunk")
    batch_size: int = option(64, "prompts per engine call")
    limit: int | None = option(None, "only the first N prompts of each config (smoke runs)")
    dry_run: bool = option(
        False, "print the requests, tokens and estimated cost of the run, then stop (no engine starts)"
    )
    price_input_per_mtok: float | None = option(
        None, "USD per million prompt tokens, for the cost estimate (default: the list price of a known API model)"
    )
    price_output_per_mtok: float | None = option(None, "USD per million completion tokens, for the cost estimate")
    tokens_per_second: float | None = option(
        None, "generated tokens per second of your local engine, for the engine-hours of --dry-run"
    )
    retry_failed: bool = option(
        False,
        "try the stored failed rows again even when they used all 3 attempts (after an outage; a plain rerun "
        "retries only rows with attempts left)",
    )
    max_error_rate: float = option(
        0.05,
        "largest share of failed rows (unparsed, empty, error, too long) that still exits 0; above it the run "
        "writes everything and exits 3 (rerun to retry the failed rows)",
    )

    def __post_init__(self):
        from xl_suite.costs import check_tokens_per_second
        from xl_suite.runner import check_error_rate_value

        check_error_rate_value(self.max_error_rate)
        check_tokens_per_second(self.tokens_per_second)
        for name in ("chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.limit is not None and self.limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1 (or None for all prompts), got {self.limit}.")
        self.sampling()  # validates the decoding values
        if (self.price_input_per_mtok is None) != (self.price_output_per_mtok is None):
            raise InvalidArgumentError("Give both --price-input-per-mtok and --price-output-per-mtok, or neither.")

    def price(self, model: str | None) -> tuple[float, float] | None:
        """USD per million (input, output) tokens: the flags, else the list price of a known API model."""
        from xl_suite.costs import list_price

        if self.price_input_per_mtok is not None:
            return (self.price_input_per_mtok, self.price_output_per_mtok)
        return list_price(model)

    def sampling(self) -> SamplingConfig:
        """The decoding settings (recorded on every row)."""
        return SamplingConfig(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed
        )

    @classmethod
    def from_file(cls, path: str):
        """Read the settings from a YAML/JSON file (unknown keys are an error)."""
        from xl_suite.configuration import from_mapping, read_config_file

        return from_mapping(cls, read_config_file(path), source=str(path))


@dataclass
class GenerateConfig(BatchGenerationConfig):
    """``xl-suite generate``: a model's answers to benchmark configs, or a reference model's answers."""

    config: str | None = option(
        None, "benchmark config(s), comma-separated: xl-alpacaeval-de, m-alpacaeval-mt, ...", required=True
    )
    source: str | None = option(
        None,
        "source of the config: AlpacaEval prompts file (xl-alpacaeval) or translation "
        "folder (m-alpacaeval); default: the builder's default",
        metavar="PATH",
    )
    as_reference: bool = option(False, "write reference answers into the benchmark's reference column")
    push: str | None = option(
        None, "with --as-reference: push each config (split test) to this Hub dataset repo", metavar="REPO_ID"
    )
    template: str = option("answer", "answer template name or .jinja path")

    def __post_init__(self):
        super().__post_init__()
        if self.push and not self.as_reference:
            raise InvalidArgumentError("--push publishes reference answers: use it with --as-reference.")

    def config_names(self) -> list[str]:
        """The benchmark configs, checked: one language each, no duplicates.

        Raises:
            InvalidArgumentError: an empty list, a training-data or ``-all`` config, or a duplicate.
        """
        from xl_suite.datasets_api import parse_config_name

        names = [c.strip() for c in (self.config or "").split(",") if c.strip()]
        if not names:
            raise InvalidArgumentError(
                f"--config names no benchmark config: {self.config!r}. Give e.g. xl-alpacaeval-de."
            )
        for name in names:
            family, _, lang = parse_config_name(name)
            if family == "xl-instruct" or lang == "all":
                raise InvalidArgumentError(
                    f"--config {name!r}: give benchmark configs of one language "
                    "(xl-alpacaeval-de, m-alpacaeval-mt, ...)."
                )
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"Duplicate configs in --config {self.config!r}.")
        return names


def engine_provenance(generator: Generator, template: PromptTemplate, sampling: SamplingConfig) -> dict[str, Any]:
    return {
        "model": generator.model,
        "revision": getattr(generator, "revision", None),
        "backend": getattr(generator, "backend", None),
        "template_version": template.template_version,
        "sampling": sampling.to_json(),
    }


def model_label(generator: Generator) -> str:
    rev = getattr(generator, "revision", None)
    return f"{generator.model}@{rev}" if rev else generator.model


def complete_first(conversations, generator, sampling) -> list:
    completions = generator.generate(conversations, sampling) if conversations else []
    if len(completions) != len(conversations):
        raise GenerationError(
            f"{generator.model!r} returned {len(completions)} results for {len(conversations)} prompts."
        )
    return [c[0] for c in completions]


def _answer_prompts(batch, generator, template, sampling) -> tuple[list, dict[str, Any]]:
    """One engine call over the batch's ``instruction`` prompts: (completions, provenance)."""
    convs = [template.render(instruction=text) for text in batch["instruction"]]
    return complete_first(convs, generator, sampling), engine_provenance(generator, template, sampling)


def answer_batch(
    batch: dict[str, list], *, generator: Generator, template: PromptTemplate, sampling: SamplingConfig
) -> dict[str, list]:
    """Answer a batch of benchmark prompts (``instruction`` column) with one engine call.

    Returns ``output``, ``generator`` (alpaca_eval's column: the model label) and the provenance columns
    ``model``, ``revision``, ``backend``, ``template_version``, ``sampling``, ``finish_reason``,
    ``prompt_tokens``, ``completion_tokens``.
    """
    comps, prov = _answer_prompts(batch, generator, template, sampling)
    n = len(comps)
    out = {"output": [c.text for c in comps], "generator": [model_label(generator)] * n}
    out.update({k: [v] * n for k, v in prov.items()})
    out["output_status"] = [row_status(c) for c in comps]  # an empty answer is a failure: retried
    out["finish_reason"] = [c.finish_reason for c in comps]
    out["prompt_tokens"] = [int(c.prompt_tokens or 0) for c in comps]
    out["completion_tokens"] = [int(c.completion_tokens or 0) for c in comps]
    return out


def reference_batch(
    batch: dict[str, list], *, generator: Generator, template: PromptTemplate, sampling: SamplingConfig
) -> dict[str, list]:
    """Write reference answers into the benchmark's ``reference``/``reference_generator`` columns.

    The provenance goes, as JSON, into ``reference_provenance`` (model, revision, backend, template version,
    sampling, finish reason, token counts).
    """
    comps, prov = _answer_prompts(batch, generator, template, sampling)
    return {
        "reference": [c.text for c in comps],
        "reference_status": [row_status(c) for c in comps],
        "reference_generator": [model_label(generator)] * len(comps),
        "reference_provenance": [
            json.dumps(
                {
                    **prov,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": int(c.prompt_tokens or 0),
                    "completion_tokens": int(c.completion_tokens or 0),
                },
                sort_keys=True,
            )
            for c in comps
        ],
    }


#: Output versions of the answer stages: bumped when their columns change (answers/references 2: ``*_status``).
_STAGE_VERSIONS = {"answers": "answers@2", "references": "references@2"}


def generation_fingerprint(kind: str, generator: Generator, template: PromptTemplate, sampling: SamplingConfig) -> str:
    """Cache key of an answer, reference or translation stage: model, revision, template, sampling, stage version."""
    return stable_hash(
        _STAGE_VERSIONS.get(kind, kind),
        generator.fingerprint(),
        getattr(generator, "revision", None),
        template.template_version,
        sampling.to_json(),
    )


def generate_answers(
    dataset,
    generator: Generator,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "answer",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
    stats=None,
):
    """Answer every prompt of a benchmark split (``xl-alpacaeval-*`` or ``m-alpacaeval-*``).

    Args:
        dataset: ``datasets.Dataset`` with ``id``, ``language`` and ``instruction`` columns.
        generator: the model's backend.
        sampling: decoding settings (default :data:`DEFAULT_ANSWER_SAMPLING`, greedy).
        template: answer template (default ``"answer"``: the prompt as one user turn).
        work_dir: resumable chunk folder / fsspec URL (None: in memory).
        storage_options: fsspec options for ``work_dir``.
        chunk_size: rows per resumable chunk.
        batch_size: prompts per engine call.
        stats: optional :class:`xl_suite.runner.StageStats` to fill.

    Returns:
        ``datasets.Dataset`` with ``id``, ``language``, ``instruction`` (and ``english_instruction``/``dataset``
        when present), ``output``, ``generator`` and the provenance columns of :func:`answer_batch`.
    """
    from xl_suite.runner import run_stage

    require_columns(dataset, ("id", "language", "instruction"))
    tpl = load_template(template)
    sampling = sampling or DEFAULT_ANSWER_SAMPLING
    keep = [
        c for c in ("id", "language", "instruction", "english_instruction", "dataset") if c in dataset.column_names
    ]
    ds = dataset.select_columns(keep)
    return run_stage(
        ds,
        answer_batch,
        stage="answers",
        fingerprint=generation_fingerprint("answers", generator, tpl, sampling),
        work_dir=work_dir,
        fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
        batch_size=batch_size,
        chunk_size=chunk_size,
        storage_options=storage_options,
        desc=f"answers ({generator.model})",
        stats=stats,
    )


def generate_references(
    dataset,
    generator: Generator,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "answer",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
    stats=None,
):
    """Fill a benchmark split's ``reference`` column with a reference model's answers (the paper: GPT-4o-mini).

    Same arguments as :func:`generate_answers`. Returns the benchmark split with ``reference``,
    ``reference_generator`` and ``reference_provenance`` filled; every other column is unchanged, so the result can
    be published as the benchmark's references (``xl-suite generate --as-reference --push``).
    """
    from xl_suite.runner import run_stage

    require_columns(dataset, ("id", "language", "instruction"))
    tpl = load_template(template)
    sampling = sampling or DEFAULT_ANSWER_SAMPLING
    ds = dataset.remove_columns(
        [c for c in ("reference", "reference_generator", "reference_provenance") if c in dataset.column_names]
    )
    return run_stage(
        ds,
        reference_batch,
        stage="references",
        fingerprint=generation_fingerprint("references", generator, tpl, sampling),
        work_dir=work_dir,
        fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
        batch_size=batch_size,
        chunk_size=chunk_size,
        storage_options=storage_options,
        desc=f"references ({generator.model})",
        stats=stats,
    )


def require_columns(dataset, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InvalidArgumentError(f"The dataset lacks columns {missing}; it has {dataset.column_names}.")


def usable_rows(answers, references) -> tuple[Any, Any, dict[str, int]]:
    """The answers and references that are data, for an evaluation or an export: failed rows left out.

    A reference whose ``reference_status`` is a failure (empty, error, too long) is no reference, and an answer whose
    ``output_status`` is one is no answer: both stay in the cache for the retry, and an answer is kept only where its
    reference (same ``id`` and ``language``) is usable, so the two stay paired.

    Args:
        answers: rows of :func:`generate_answers` (``id``, ``language``, ``output``, ``output_status``).
        references: rows of :func:`generate_references` (``id``, ``language``, ``reference``, ``reference_status``).

    Returns:
        ``(answers kept, references kept, {"answers": failed answers, "references": failed references})``.

    >>> import datasets
    >>> ans = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "language": ["de"] * 3,
    ...                                   "output_status": ["ok", "error", "ok"]})
    >>> refs = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "language": ["de"] * 3,
    ...                                    "reference_status": ["ok", "ok", "empty"]})
    >>> a, r, failed = usable_rows(ans, refs)
    >>> list(a["id"]), list(r["id"]), failed
    (['a'], ['a', 'b'], {'answers': 1, 'references': 1})
    """
    from xl_suite.run.policy import drop_failed

    refs_kept, ref_failed = drop_failed(references, ["reference_status"])
    answers_ok, answer_failed = drop_failed(answers, ["output_status"])
    usable = set(zip(refs_kept["id"], refs_kept["language"], strict=True))
    keep = [i for i, k in enumerate(zip(answers_ok["id"], answers_ok["language"], strict=True)) if k in usable]
    if len(keep) != answers_ok.num_rows:
        answers_ok = answers_ok.select(keep)
    return answers_ok, refs_kept, {"answers": sum(answer_failed.values()), "references": sum(ref_failed.values())}
