"""m-AlpacaEval: the kept English prompts machine-translated into each language (the paper used GPT-4o)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xl_suite.configuration import option
from xl_suite.engines.base import Generator, SamplingConfig, failure_status, prompt_truncated, raw_text
from xl_suite.errors import OutputExistsError
from xl_suite.evaluation.answers import (
    BatchGenerationConfig,
    complete_first,
    engine_provenance,
    generation_fingerprint,
    model_label,
    require_columns,
)
from xl_suite.fingerprint import stable_hash
from xl_suite.languages import get_language, language_fingerprint, resolve_languages
from xl_suite.prompting import PromptTemplate, load_template
from xl_suite.sources import write_jsonl
from xl_suite.status import FAILED, RowStatus


logger = logging.getLogger(__name__)

__all__ = [
    "TranslateConfig",
    "DEFAULT_TRANSLATION_SAMPLING",
    "translate_batch",
    "english_prompts",
    "translate_prompts",
    "write_m_alpacaeval",
]

#: Greedy decoding for m-AlpacaEval translation.
DEFAULT_TRANSLATION_SAMPLING = SamplingConfig(temperature=0.0, max_tokens=1024)


@dataclass
class TranslateConfig(BatchGenerationConfig):
    """``xl-suite translate``: the kept English prompts machine-translated into m-AlpacaEval files."""

    languages: str | None = option(None, "comma-separated target codes, e.g. de,mt", required=True)
    source: str | None = option(
        None, "AlpacaEval prompts (JSON/JSONL/Parquet; default: the alpaca_eval data on the Hub)", metavar="PATH"
    )
    template: str = option("translate_instruction", "translation template name or .jinja path")


def translate_batch(
    batch: dict[str, list], *, generator: Generator, template: PromptTemplate, sampling: SamplingConfig
) -> dict[str, list]:
    """Translate English prompts (``english_instruction``) into each row's ``language``, one engine call.

    Returns ``instruction`` (the translation, stripped), ``translator`` (model label), ``translation_status``
    (``ok``, ``empty``, ``truncated`` (the translation hit ``max_tokens``) or ``prompt_truncated`` (the prompt was cut
    to fit the context, under ``truncate_prompts``): never dropped) and the provenance columns.
    """
    convs = [
        template.render(text=text, language=get_language(lang))
        for text, lang in zip(batch["english_instruction"], batch["language"], strict=True)
    ]
    comps = complete_first(convs, generator, sampling)
    prov = engine_provenance(generator, template, sampling)
    n = len(comps)
    status = [
        failure_status(c)
        or (
            RowStatus.EMPTY
            if not c.text.strip()
            # a translation of a cut prompt misses part of the text, whether or not it also hit max_tokens
            else RowStatus.PROMPT_TRUNCATED
            if prompt_truncated(c)
            else (RowStatus.TRUNCATED if c.finish_reason == "length" else RowStatus.OK)
        )
        for c in comps
    ]
    out = {
        "instruction": [c.text.strip() for c in comps],
        "translator": [model_label(generator)] * n,
        "translation_status": status,
        "raw_completion": [raw_text(c) for c in comps],
    }
    out.update({k: [v] * n for k, v in prov.items()})
    out["prompt_tokens"] = [int(c.prompt_tokens or 0) for c in comps]
    out["completion_tokens"] = [int(c.completion_tokens or 0) for c in comps]
    return out


def english_prompts(source: str | None = None, *, limit: int | None = None, storage_options: dict | None = None):
    """The kept English XL-AlpacaEval prompts (797 of AlpacaEval's 805) as a Dataset to translate.

    Columns: ``id`` (the same id as in every ``xl-alpacaeval-*`` config), ``english_instruction``, ``dataset``,
    ``alpaca_eval_index``.
    """
    import datasets

    from xl_suite import sources

    records = sources.read_alpaca_eval(source or sources.DEFAULT_ALPACA_EVAL_SOURCE, storage_options=storage_options)
    kept, _ = sources.filter_english_specific(records)
    if limit is not None:
        kept = kept[:limit]
    return datasets.Dataset.from_list(
        [
            {
                "id": sources.prompt_id(r["instruction"]),
                "english_instruction": r["instruction"],
                "dataset": r.get("dataset") or "",
                "alpaca_eval_index": int(r["alpaca_eval_index"]),
            }
            for r in kept
        ]
    )


def translate_prompts(
    prompts,
    generator: Generator,
    languages: Sequence[str] | str,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "translate_instruction",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
    stats=None,
) -> dict[str, Any]:
    """Machine-translate English prompts into each language (m-AlpacaEval; the paper used GPT-4o).

    Args:
        prompts: Dataset with ``id`` and ``english_instruction`` (see :func:`english_prompts`).
        generator: the translation model.
        languages: target codes (list or comma-separated string; English is refused).
        sampling: decoding settings (default greedy, :data:`DEFAULT_TRANSLATION_SAMPLING`).
        template: translation template (default ``"translate_instruction"``).
        work_dir: resumable chunk folder / fsspec URL (None: in memory); one stage per language.
        storage_options: fsspec options for ``work_dir``.
        chunk_size: rows per resumable chunk.
        batch_size: prompts per engine call.
        stats: optional :class:`xl_suite.runner.StageStats` to fill (all languages together).

    Returns:
        code -> Dataset with ``id``, ``instruction`` (translated), ``english_instruction``, ``language``,
        ``dataset``, ``translator``, ``translation_status`` and provenance; loadable by the m-AlpacaEval builder
        once written with :func:`write_m_alpacaeval`.
    """
    from xl_suite.runner import run_stage

    require_columns(prompts, ("id", "english_instruction"))
    specs = resolve_languages(languages)
    tpl = load_template(template)
    sampling = sampling or DEFAULT_TRANSLATION_SAMPLING
    fp = generation_fingerprint("translate", generator, tpl, sampling)
    out = {}
    for spec in specs:
        ds = prompts.map(
            lambda b, code=spec.code: {"language": [code] * len(b["id"])},
            batched=True,
            new_fingerprint=stable_hash("lang", fp, spec.code),
            keep_in_memory=True,
        )
        redefined = language_fingerprint([spec.code])  # a language that is not built in: its definition counts
        result = run_stage(
            ds,
            translate_batch,
            stage=f"translate-{spec.code}",
            fingerprint=stable_hash(fp, redefined) if redefined else fp,
            work_dir=work_dir,
            fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
            batch_size=batch_size,
            chunk_size=chunk_size,
            storage_options=storage_options,
            desc=f"translate {spec.code} ({generator.model})",
            stats=stats,
        )
        failed = [s for s in result["translation_status"] if s in FAILED]
        flagged = [s for s in result["translation_status"] if s != RowStatus.OK and s not in FAILED]
        if failed:
            logger.warning(
                "%s: %d of %d translations failed (%s): stored with their status for the retry, never written as "
                "prompts (write_m_alpacaeval leaves them out).",
                spec.code,
                len(failed),
                result.num_rows,
                ", ".join(sorted({str(s) for s in failed})),
            )
        if flagged:
            logger.warning(
                "%s: %d of %d translations are truncated or made from a truncated prompt (kept, marked in "
                "translation_status).",
                spec.code,
                len(flagged),
                result.num_rows,
            )
        out[spec.code] = result
    return out


def write_m_alpacaeval(
    translations: dict[str, Any], output_dir: str | Path, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``<code>.jsonl`` per language: the layout the m-AlpacaEval builder reads (``source=output_dir``).

    Rows whose ``translation_status`` is a failure (empty, error, too long) are left out: a failed translation is
    never written as a prompt (the run layer keeps it for the retry).

    Raises:
        FileExistsError: a language file exists and ``overwrite`` is False.
    """
    from xl_suite.run.policy import drop_failed

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for code, ds in translations.items():
        path = out / f"{code}.jsonl"
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI --overwrite) to replace it.")
        ds, _ = drop_failed(ds, ["translation_status"])
        write_jsonl(ds.to_list(), path)
        paths[code] = path
    return paths
