"""Dataset builders for XL-AlpacaEval, m-AlpacaEval and XL-Instruct.

Classic ``GeneratorBasedBuilder`` skeletons (module constants, config dataclass, configs by comprehension over
languages plus ``all``, explicit ``Features``, deterministic keys). ``datasets>=4`` cannot run them through
``load_dataset(script)``: :func:`xl_suite.load_xl_suite` instantiates them directly, and :func:`xl_suite.export_repo`
publishes their output as a data-only (Parquet + README ``configs:``) repo. ``dataset_scripts/`` re-exports them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import datasets

from xl_suite import sources
from xl_suite.constants import CITATION, LICENSE_BENCHMARK, LICENSE_INSTRUCT, PAPER_URL
from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import BENCHMARK_LANGUAGES, CORE_LANGUAGES, builtin_languages, get_language
from xl_suite.provenance import SYNTHESIS_ORIGIN, provenance_features, public_source, synthesis_provenance
from xl_suite.status import is_failed


logger = logging.getLogger(__name__)

_LANGUAGES = BENCHMARK_LANGUAGES
_VERSION = datasets.Version("1.0.0")
#: 1.1.0: synthesized rows carry the typed ``provenance`` struct; ``origin`` never holds a local path.
_XL_INSTRUCT_VERSION = datasets.Version("1.1.0")

#: Default source of the authors' releases on the Hub. The XL-Instruct repo id is known; the m-AlpacaEval id is
#: assumed from the authors' naming and may need ``source=`` to point elsewhere.
DEFAULT_XL_INSTRUCT_SOURCE = "hf://datasets/viyer98/xl-instruct"
DEFAULT_M_ALPACAEVAL_SOURCE = "hf://datasets/viyer98/m-alpacaeval"

XL_INSTRUCT_VARIANTS = ("default", "bestof3", "scored")

_DESCRIPTION_XL_ALPACAEVAL = """\
XL-AlpacaEval: AlpacaEval's English prompts (797 of 805; 8 English-specific prompts removed) with a request to answer
in a target language. Cross-lingual open-ended generation benchmark, judged pairwise against reference answers.
"""
_DESCRIPTION_M_ALPACAEVAL = """\
m-AlpacaEval: the 797 XL-AlpacaEval prompts machine-translated into the target language (same-language QA).
"""
_DESCRIPTION_XL_INSTRUCT = """\
XL-Instruct: synthetic (English instruction -> target-language response) training pairs for cross-lingual
open-ended generation; variants default, bestof3 and scored as in the authors' release.
"""


@dataclass
class XlSuiteConfig(datasets.BuilderConfig):
    """Configuration shared by the XL-Suite builders.

    Args:
        language: target language code, or ``"all"`` for every language of the builder.
        languages: languages covered by ``"all"`` (default: the builder's languages).
        source: path or fsspec URL of the source data (file or folder); None uses the builder's default.
        storage_options: fsspec storage options for ``source``.
        variant: XL-Instruct variant (``default``, ``bestof3``, ``scored``); ignored by the benchmarks.
        column_mapping: target field -> source column (or candidate list) for releases with unknown field names.
        request_template: template (name or .jinja path) that adds the target-language request (XL-AlpacaEval).
        source_version: fingerprint of the source files (sizes, times); set by :func:`xl_suite.load_xl_suite` so a
            changed file is never served from a stale cache.
        language_version: fingerprint of the definitions (names, request sentence, script, identifier labels) of
            the target languages that are not built in; set by :func:`xl_suite.load_xl_suite`, so that a language
            redefined in a languages file or with ``register_language`` is never served from the cache of its
            earlier definition. Built-in languages are versioned with the package.
    """

    language: str = "all"
    languages: tuple[str, ...] = ()
    source: str | None = None
    storage_options: dict | None = None
    variant: str = "default"
    column_mapping: dict | None = None
    request_template: str = sources.REQUEST_TEMPLATE
    source_version: str = ""
    language_version: str = ""
    family: str = field(default="", repr=False)

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Check fields; also called after datasets applies keyword overrides with setattr."""
        if self.language != "all":
            get_language(self.language)  # unknown code -> clear error listing known codes
        self.languages = tuple(self.languages)
        for code in self.languages:
            get_language(code)
        if len(set(self.languages)) != len(self.languages):
            raise InvalidArgumentError(f"Duplicate language codes in {list(self.languages)}; list each once.")
        if self.variant not in XL_INSTRUCT_VARIANTS:
            raise InvalidArgumentError(
                f"Unknown XL-Instruct variant {self.variant!r}; choose one of {list(XL_INSTRUCT_VARIANTS)}."
            )

    def target_languages(self, default: tuple[str, ...]) -> list[str]:
        """Codes this config produces, in order."""
        if self.language != "all":
            return [self.language]
        return list(self.languages or default)


class XlAlpacaEval(datasets.GeneratorBasedBuilder):
    """XL-AlpacaEval: English prompts + a request to answer in the target language (split ``test``)."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = XlSuiteConfig
    FAMILY = "xl-alpacaeval"
    # One config per built-in target language (the paper's 11 first), all from the same 797 prompts; "all" stays
    # the paper's 11.
    BUILDER_CONFIGS = [
        XlSuiteConfig(
            name=f"xl-alpacaeval-{spec.config_code}",
            language=spec.code,
            version=_VERSION,
            family="xl-alpacaeval",
            description=f"XL-AlpacaEval, answers requested in {spec.display_name}.",
        )
        for spec in [get_language(c) for c in _LANGUAGES]
        + [s for s in builtin_languages().values() if s.code not in _LANGUAGES and s.code != "en"]
    ] + [
        XlSuiteConfig(
            name="xl-alpacaeval-all",
            language="all",
            version=_VERSION,
            family="xl-alpacaeval",
            description="XL-AlpacaEval, all target languages.",
        )
    ]

    def _info(self):
        return datasets.DatasetInfo(
            description=_DESCRIPTION_XL_ALPACAEVAL,
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "alpaca_eval_index": datasets.Value("int32"),
                    "instruction": datasets.Value("string"),
                    "english_instruction": datasets.Value("string"),
                    "language": datasets.Value("string"),
                    "dataset": datasets.Value("string"),
                    "reference": datasets.Value("string"),
                    "reference_generator": datasets.Value("string"),
                    "request_template": datasets.Value("string"),
                }
            ),
            homepage=PAPER_URL,
            license=LICENSE_BENCHMARK,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        src = self.config.source or sources.DEFAULT_ALPACA_EVAL_SOURCE
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TEST,
                gen_kwargs={"source": src, "languages": self.config.target_languages(_LANGUAGES)},
            )
        ]

    def _generate_examples(self, source, languages):
        records = sources.read_alpaca_eval(source, storage_options=self.config.storage_options)
        kept, _ = sources.filter_english_specific(records)
        for code in languages:
            for row in sources.xl_alpacaeval_rows(kept, get_language(code), template=self.config.request_template):
                yield f"{code}-{row['id']}", row


class MAlpacaEval(datasets.GeneratorBasedBuilder):
    """m-AlpacaEval: the prompts translated into the target language (split ``test``), from files.

    ``source`` is a folder holding ``<english name>.json`` per language (the authors' layout: ``german.json``), or
    ``<code>.jsonl``/``.parquet`` as written by ``xl-suite translate``, or a single file for one language.
    Records need ``instruction`` (translated); ``id``/``english_instruction``/``dataset`` are kept when present.
    """

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = XlSuiteConfig
    FAMILY = "m-alpacaeval"
    BUILDER_CONFIGS = [
        XlSuiteConfig(name=f"m-alpacaeval-{lang}", language=lang, version=_VERSION, family="m-alpacaeval")
        for lang in CORE_LANGUAGES
    ] + [XlSuiteConfig(name="m-alpacaeval-all", language="all", version=_VERSION, family="m-alpacaeval")]

    def _info(self):
        return datasets.DatasetInfo(
            description=_DESCRIPTION_M_ALPACAEVAL,
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "instruction": datasets.Value("string"),
                    "english_instruction": datasets.Value("string"),
                    "language": datasets.Value("string"),
                    "dataset": datasets.Value("string"),
                    "reference": datasets.Value("string"),
                    "translator": datasets.Value("string"),
                }
            ),
            homepage=PAPER_URL,
            license=LICENSE_BENCHMARK,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        src = self.config.source or DEFAULT_M_ALPACAEVAL_SOURCE
        langs = self.config.target_languages(CORE_LANGUAGES)
        files = {code: _language_file(src, code, self.config.storage_options) for code in langs}
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"files": files})]

    def _generate_examples(self, files):
        mapping = self.config.column_mapping or {"instruction": ("instruction", "prompt", "question")}
        for code, path in files.items():
            failed = 0
            for i, rec in enumerate(sources.iter_records(path, storage_options=self.config.storage_options)):
                if is_failed(rec.get("translation_status")):  # a failed translation is no prompt (older files)
                    failed += 1
                    continue
                m = sources.map_columns(rec, mapping, source=path)
                rest = m["_rest"]
                english = rest.get("english_instruction")
                rid = rest.get("id") or (sources.prompt_id(english) if english else f"{code}-{i:05d}")
                yield (
                    f"{code}-{i:05d}",
                    {
                        "id": str(rid),
                        "instruction": m["instruction"],
                        "english_instruction": english,
                        "language": code,
                        "dataset": rest.get("dataset"),
                        "reference": rest.get("reference"),
                        "translator": rest.get("translator") or rest.get("model"),
                    },
                )
            if failed:
                logger.warning(
                    "%s: %d rows have a failed translation_status (empty, error...) and are not served; rerun "
                    "`xl-suite translate` into that folder to retry them.",
                    path,
                    failed,
                )


class XlInstruct(datasets.GeneratorBasedBuilder):
    """XL-Instruct training pairs (split ``train``), from the authors' release or an ``xl-suite synthesize`` run.

    Release layout (the default ``source``): ``<code>.json`` (variant default), ``<code>_bestof3.json`` (bestof3) and
    ``en_scored.json`` (scored). Field names of the release are unknown: columns are mapped by
    :data:`xl_suite.sources.XL_INSTRUCT_COLUMN_CANDIDATES` unless ``column_mapping`` overrides it; every unmapped
    column is kept, as JSON, in ``metadata``. A synthesis output folder (``<code>.parquet``/``.jsonl`` files) works
    the same way, and its provenance columns (model, revision, template versions, sampling, scores and raw
    completions of every stage) become the typed ``provenance`` struct (:func:`xl_suite.provenance.provenance_features`;
    ``None`` for other releases). ``origin`` is ``"xl-suite synthesize"``, a URL or ``local file <name>``, never a
    local path.
    """

    VERSION = _XL_INSTRUCT_VERSION
    BUILDER_CONFIG_CLASS = XlSuiteConfig
    FAMILY = "xl-instruct"
    BUILDER_CONFIGS = (
        [
            XlSuiteConfig(
                name=f"xl-instruct-{lang}", language=lang, version=_XL_INSTRUCT_VERSION, family="xl-instruct"
            )
            for lang in CORE_LANGUAGES + ("fi", "tr")
        ]
        + [
            XlSuiteConfig(
                name="xl-instruct-all",
                language="all",
                version=_XL_INSTRUCT_VERSION,
                family="xl-instruct",
                languages=CORE_LANGUAGES,
            )
        ]
        + [
            XlSuiteConfig(
                name=f"xl-instruct-bestof3-{lang}",
                language=lang,
                variant="bestof3",
                version=_XL_INSTRUCT_VERSION,
                family="xl-instruct",
            )
            for lang in CORE_LANGUAGES
        ]
        + [
            XlSuiteConfig(
                name="xl-instruct-scored-en",
                language="en",
                variant="scored",
                version=_XL_INSTRUCT_VERSION,
                family="xl-instruct",
            )
        ]
    )

    def _info(self):
        return datasets.DatasetInfo(
            description=_DESCRIPTION_XL_INSTRUCT,
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "instruction": datasets.Value("string"),
                    "response": datasets.Value("string"),
                    "language": datasets.Value("string"),
                    "variant": datasets.Value("string"),
                    "origin": datasets.Value("string"),
                    "metadata": datasets.Value("string"),
                    "provenance": provenance_features(),
                }
            ),
            homepage=PAPER_URL,
            license=LICENSE_INSTRUCT,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        src = self.config.source or DEFAULT_XL_INSTRUCT_SOURCE
        langs = self.config.target_languages(CORE_LANGUAGES)
        suffix = {"default": "", "bestof3": "_bestof3", "scored": "_scored"}[self.config.variant]
        files = {code: _language_file(src, code, self.config.storage_options, suffix=suffix) for code in langs}
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"files": files, "origin": src})]

    def _generate_examples(self, files, origin):
        mapping = self.config.column_mapping or sources.XL_INSTRUCT_COLUMN_CANDIDATES
        origin_label = public_source(origin)  # a URL, or "local file <name>": never a local path
        for code, path in files.items():
            for i, rec in enumerate(sources.iter_records(path, storage_options=self.config.storage_options)):
                m = sources.map_columns(rec, mapping, source=path)
                prov, rest = synthesis_provenance(m.pop("_rest"))
                rid = rest.pop("id", None) or f"{code}-{i:06d}"
                yield (
                    f"{code}-{i:06d}",
                    {
                        "id": str(rid),
                        "instruction": m["instruction"],
                        "response": m["response"],
                        "language": code,
                        "variant": self.config.variant,
                        "origin": SYNTHESIS_ORIGIN if prov is not None else origin_label,
                        "metadata": json.dumps(rest, ensure_ascii=False, default=str, sort_keys=True),
                        "provenance": prov,
                    },
                )


def _language_file(source: str, code: str, storage_options: dict | None, *, suffix: str = "") -> str:
    """Resolve the file for one language inside a source folder (or the source itself if it is a file)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    if fs.isfile(path):
        return source
    name = get_language(code).name
    stems = [f"{code}{suffix}", f"{name}{suffix}"]
    for stem in stems:
        for ext in (".json", ".jsonl", ".parquet"):
            cand = source.rstrip("/") + "/" + stem + ext
            try:
                if fs.isfile(fsspec.core.url_to_fs(cand, **(storage_options or {}))[1]):
                    return cand
            except Exception:  # remote filesystems raise on missing paths in various ways
                continue
    raise sources.SourceError(
        f"No file for language {code!r} in {source!r}: looked for {[s + '.{json,jsonl,parquet}' for s in stems]}. "
        "Pass source= a folder holding it, or a single file."
    )


BUILDERS: dict[str, type[datasets.GeneratorBasedBuilder]] = {
    b.FAMILY: b for b in (XlAlpacaEval, MAlpacaEval, XlInstruct)
}
