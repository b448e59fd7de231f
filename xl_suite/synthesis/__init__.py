"""XL-Instruct synthesis: English instruction -> target-language response pairs, as a datasets-native pipeline.

**This pipeline is a reconstruction.** The paper (arXiv 2503.22973) does not say, in what we could read, which
stages, models, prompts, criteria or thresholds it used; third-party summaries call the method "iterative
backtranslation with multi-dimensional quality filtering" and name a web corpus as the seed source. The stages
below are our reasoned choice, consistent with those hints and with the release layout (``scored``, ``bestof3`` and
``default`` configs); see ``xl_suite/prompts/README.md`` ("Synthesis templates"). Stages, in order
(:func:`default_stages`):

========================  =====================================================================================
``backtranslate``         the LLM writes the English instruction a seed passage would answer (instruction
                          backtranslation); rows whose output is empty are dropped and counted.
``refine``                the LLM rewrites the passage into a high-quality English answer to that instruction.
``decontaminate``         drops pairs whose instruction or English answer contains a benchmark prompt (Tulu 3's
                          n-gram rule, :mod:`~xl_suite.synthesis.decontamination`); counted.
``score``                 multi-criteria scoring (:data:`EN_CRITERIA`, integers 1-5), as JSON constrained by
                          :func:`xl_suite.scoring.score_schema` where the backend supports structured outputs; parsed by
                          :func:`xl_suite.scoring.parse_scores` (``None`` on failure: the row is kept, marked ``unparsed``,
                          counted). Output: the ``scored`` shape (``en_scored.parquet``).
``score_filter``          keeps rows whose parsed mean (or min) score reaches ``threshold``.
``expand``                one row per (pair, target language).
``respond``               ``n_candidates`` (3) sampled target-language answers per row.
``judge``                 a scorer rates each candidate (:data:`TARGET_CRITERIA`); the best mean is kept
                          (:func:`xl_suite.scoring.select_best`). Output: the ``bestof3`` shape (``<code>_bestof3.parquet``).
``language_check``        an offline language identifier (:mod:`xl_suite.fidelity`) checks the kept answer is in
                          the target language (``language_filter=False`` records the result without filtering).
``decontaminate_target``  the same check on the target-language answer (against translated m-AlpacaEval prompts).
========================  =====================================================================================

Then exact duplicates (normalised instruction or response, per language) and near-duplicates (MinHash LSH,
:class:`~xl_suite.synthesis.decontamination.NearDuplicateIndex`) are removed and at most
``num_examples`` pairs per language are kept: the ``default`` shape (``<code>.parquet``), loadable with
``xl_suite.load_xl_suite("xl-instruct-<code>", source=OUTPUT)``.

Every stage is a pure batched function ``(batch: dict[str, list], *, generator, template, sampling, **params) ->
dict[str, list]`` run through :func:`xl_suite.runner.run_stage` (chunked, resumable ``Dataset.map(batched=True)``,
fingerprinted by stage, engine fingerprint, revision, template sha, sampling JSON and seed). Seed chunks go through
all stages one after the other (chunk-major; a few chunks at once when the engine takes concurrent calls), so
memory is bounded by a few chunks, results are written as they finish, and a killed run loses only the engine calls
in flight. Every generated row records ``<stage>_model``,
``<stage>_revision``, ``<stage>_template`` (``name@version+sha``), ``<stage>_sampling`` (JSON), ``<stage>_raw``
(raw completion(s)), ``<stage>_status`` (parse status), token counts and, for scoring stages, the scores.
An engine error (:class:`~xl_suite.errors.GenerationError`) propagates: it never becomes empty rows.

Modules: :mod:`~xl_suite.synthesis.config` (settings, stages, checks), :mod:`~xl_suite.synthesis.stages` (the
batched functions), :mod:`~xl_suite.synthesis.pipeline` (the run), :mod:`~xl_suite.synthesis.outputs` (release
files), :mod:`~xl_suite.synthesis.report` (summary), :mod:`~xl_suite.synthesis.seeds` (seed passages) and
:mod:`~xl_suite.synthesis.ray` (the same stages on Ray Data), :mod:`~xl_suite.synthesis.decontamination`
(benchmark decontamination and near-duplicates).
"""

from xl_suite.synthesis.config import (
    DEFAULT_STAGE_NAMES,
    EN_CRITERIA,
    SEED_COLUMNS,
    SYNTHESIS_VERSION,
    TARGET_CRITERIA,
    Stage,
    SynthesisConfig,
    apply_template_overrides,
    check_templates,
    check_wiring,
    default_stages,
    preflight,
    stage_fingerprint,
)
from xl_suite.synthesis.decontamination import Benchmark, NearDuplicateIndex, decontaminate_batch, resolve_benchmark
from xl_suite.synthesis.outputs import SNAPSHOT_FILES, SynthesisResult
from xl_suite.synthesis.pipeline import SynthesisPlan, apply_stages, plan_synthesis, synthesize
from xl_suite.synthesis.report import format_summary
from xl_suite.synthesis.stages import (
    backtranslate_batch,
    expand_languages_batch,
    generate_checked,
    judge_batch,
    language_check_batch,
    refine_batch,
    respond_batch,
    score_batch,
    score_filter_batch,
)


__all__ = [
    "Benchmark",
    "NearDuplicateIndex",
    "decontaminate_batch",
    "resolve_benchmark",
    "SYNTHESIS_VERSION",
    "EN_CRITERIA",
    "TARGET_CRITERIA",
    "SEED_COLUMNS",
    "Stage",
    "SynthesisConfig",
    "SynthesisResult",
    "DEFAULT_STAGE_NAMES",
    "SNAPSHOT_FILES",
    "default_stages",
    "apply_template_overrides",
    "stage_fingerprint",
    "check_templates",
    "check_wiring",
    "preflight",
    "synthesize",
    "SynthesisPlan",
    "plan_synthesis",
    "apply_stages",
    "format_summary",
    "generate_checked",
    "backtranslate_batch",
    "refine_batch",
    "score_batch",
    "score_filter_batch",
    "expand_languages_batch",
    "respond_batch",
    "judge_batch",
    "language_check_batch",
]
