"""alpaca_eval files in and out: ``model_outputs.json`` and ``annotations.json`` as alpaca_eval writes them.

alpaca_eval keys rows by their instruction text; xl-suite by (``id``, ``language``). :func:`match_instructions`
matches each row's instruction to an XL-AlpacaEval prompt in the row's language (the English AlpacaEval instruction
or the XL-AlpacaEval prompt with its target-language request both match), and gives the row its ``id`` and
``language``. A file without a ``language`` column needs one language for all its rows (``--language``). Rows whose
instruction is not in XL-AlpacaEval (e.g. the 8 English-specific prompts it leaves out) are not dropped silently:
:class:`AlpacaEvalMatch` counts them and keeps a sample, which ``xl-suite evaluate`` prints and writes in the report.
Two rows with the same instruction in the same language are an error that names them.

``annotations.json`` holds judgments already made (alpaca_eval's ``preference`` in ``[1, 2]``: 1 = ``output_1``
better, 2 = ``output_2`` better). :func:`from_annotations` reads them as the model's answers (``output_2``), the
references (``output_1``) and P(model beats reference) = ``preference - 1``.

On the way out, :data:`LEADERBOARD_COLUMNS` are alpaca_eval's leaderboard columns, in its order, and
:data:`LEADERBOARD_RENAMES` maps our statistic names to them (same meanings: ``n_wins_base`` counts the
reference's wins, ``avg_length`` is the mean answer length in characters).

Length control: alpaca_eval's ``length_controlled_winrate`` is its ``length_controlled_v1`` GLM, which needs the
per-instruction difficulty and the gamed baselines of ``df_gamed.csv`` (Hub dataset ``tatsu-lab/alpaca_eval``;
neither alpaca_eval's wheel nor its git repository carries it) and only means something for alpaca_eval's own
judgments (``weighted_alpaca_eval_gpt4_turbo`` against ``gpt4_1106_preview`` on its English prompts).
:func:`add_length_controlled_v1` fills that column only there, reading the file from huggingface_hub's cache (never
the network); everywhere else the column stays empty and the report says why. The estimator xl-suite computes for
every evaluation, alpaca_eval's ``length_controlled_minimal`` GLM, is ``lc_minimal_winrate``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import get_language
from xl_suite.status import is_rule


__all__ = [
    "ALPACA_EVAL_BOARD",
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_RENAMES",
    "ANNOTATION_COLUMNS",
    "AlpacaEvalMatch",
    "file_kind",
    "match_instructions",
    "from_model_outputs",
    "from_annotations",
    "annotation_probability",
    "LC_V1_ANNOTATOR",
    "LC_V1_BASELINE",
    "GamedBaselinesUnavailable",
    "read_gamed_baselines",
    "length_controlled_v1_reason",
    "add_length_controlled_v1",
    "ANNOTATION_FIELDS",
    "MODEL_OUTPUT_FIELDS",
    "annotation_rows",
    "model_output_rows",
    "describe_items",
    "match_summary",
]

#: alpaca_eval's leaderboard CSV columns, in its order (after the model name).
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "mode",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
)
#: Our statistic name -> alpaca_eval's name for the same quantity.
LEADERBOARD_RENAMES: dict[str, str] = {
    "n_losses": "n_wins_base",
    "avg_model_length": "avg_length",
}
#: The language label of rows read from an alpaca_eval leaderboard (its 805 English prompts; XL-AlpacaEval's ``en``
#: keeps 797 of them).
ALPACA_EVAL_BOARD = "alpaca_eval"
#: The annotator and baseline of alpaca_eval's ``df_gamed.csv``: ``length_controlled_v1`` applies only to them.
LC_V1_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
LC_V1_BASELINE = "gpt4_1106_preview"
#: Where alpaca_eval reads ``df_gamed.csv`` from (``hf_hub_download``; we read huggingface_hub's cache only).
GAMED_REPO_ID = "tatsu-lab/alpaca_eval"
GAMED_FILENAME = "df_gamed.csv"
_GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")
#: Columns every alpaca_eval annotation row has (``annotator`` and the generators are optional).
ANNOTATION_COLUMNS: tuple[str, ...] = ("instruction", "output_1", "output_2", "preference")

#: The fields of alpaca_eval's ``annotations.json``, in the order its files hold them (its annotators keep
#: ``preference`` with ``price_per_example``, ``time_per_example`` and ``raw_completion``; ``dataset`` comes from the
#: outputs). xl-suite's files add ``id`` and ``language`` after them.
ANNOTATION_FIELDS: tuple[str, ...] = (
    "instruction",
    "output_1",
    "generator_1",
    "dataset",
    "output_2",
    "generator_2",
    "annotator",
    "preference",
    "price_per_example",
    "time_per_example",
    "raw_completion",
)
#: The fields of alpaca_eval's ``model_outputs.json``, in its order (xl-suite's add ``id`` and ``language``).
MODEL_OUTPUT_FIELDS: tuple[str, ...] = ("dataset", "instruction", "output", "generator")
#: What :func:`describe_items` copies from answer rows into ``EvaluationResult.inputs``.
_ITEM_EXTRAS = (
    "dataset",
    "reference_generator",
    "annotator",
    "raw_completion",
    "price_per_example",
    "time_per_example",
)

#: How many unmatched instructions are kept as a sample.
_SAMPLE = 10

FileKind = Literal["xl_suite", "model_outputs", "annotations"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def file_kind(rows: Sequence[dict]) -> FileKind:
    """Which kind of answer file the rows come from (judged by the first row's columns).

    ``annotations``: alpaca_eval judgments (``output_1``, ``output_2``, ``preference``); ``model_outputs``:
    alpaca_eval outputs (``instruction`` and ``output``, no ``id``); ``xl_suite``: rows with ``id`` (as written by
    ``xl-suite generate``).

    >>> file_kind([{"instruction": "Hi", "output": "Hallo", "generator": "m", "dataset": "koala"}])
    'model_outputs'
    >>> file_kind([{"instruction": "Hi", "output_1": "a", "output_2": "b", "preference": 2.0}])
    'annotations'
    >>> file_kind([{"id": "1", "language": "de", "output": "Hallo"}])
    'xl_suite'
    """
    if not rows:
        raise InvalidArgumentError("No rows given.")
    first = rows[0]
    if all(k in first for k in ANNOTATION_COLUMNS):
        return "annotations"
    if "id" not in first and "instruction" in first and "output" in first:
        return "model_outputs"
    return "xl_suite"


@dataclass
class AlpacaEvalMatch:
    """Rows of an alpaca_eval file matched to XL-AlpacaEval.

    Attributes:
        rows: the matched rows, each with its original columns plus ``id``, ``language``, ``english_instruction``
            and ``alpaca_eval_index`` (the prompt's position in AlpacaEval's 805), in file order.
        unmatched: a sample (the first 10) of the rows that match no XL-AlpacaEval prompt: ``index`` in the file,
            ``language`` and ``instruction``.
        n_unmatched: how many rows match no prompt.
        n_input: how many rows the file holds.
    """

    rows: list[dict]
    unmatched: list[dict] = field(default_factory=list)
    n_unmatched: int = 0
    n_input: int = 0

    def summary(self, what: str = "the file") -> str | None:
        """One line about the unmatched rows (None when every row matched)."""
        if not self.n_unmatched:
            return None
        sample = "; ".join(f"#{u['index']} [{u['language']}] {u['instruction'][:80]!r}" for u in self.unmatched[:3])
        return (
            f"{self.n_unmatched} of {self.n_input} rows of {what} match no XL-AlpacaEval prompt in their language "
            f"and are left out of the scores, e.g. {sample}."
        )


def _benchmark_index(codes: Sequence[str], source: str, storage_options: dict | None) -> dict[tuple[str, str], dict]:
    from xl_suite.sources import filter_english_specific, read_alpaca_eval, xl_alpacaeval_rows

    kept, _ = filter_english_specific(read_alpaca_eval(source, storage_options=storage_options))
    index: dict[tuple[str, str], dict] = {}
    for code in codes:
        for row in xl_alpacaeval_rows(kept, get_language(code)):
            index[(_norm(row["english_instruction"]), code)] = row
            index[(_norm(row["instruction"]), code)] = row
    return index


def match_instructions(
    rows: Sequence[dict],
    *,
    language: str | None = None,
    source: str,
    storage_options: dict | None = None,
    what: str = "the file",
) -> AlpacaEvalMatch:
    """Match alpaca_eval rows to XL-AlpacaEval prompts by instruction text and language.

    Args:
        rows: dicts with ``instruction`` (and ``language`` unless ``language`` is given).
        language: the language of every row (code or English name), for files without a ``language`` column. A
            row's own ``language`` must agree with it.
        source: the AlpacaEval prompts XL-AlpacaEval is built from (path or fsspec URL).
        storage_options: fsspec options for ``source``.
        what: how messages name the file.

    Returns:
        :class:`AlpacaEvalMatch`.

    Raises:
        InvalidArgumentError: a row without an instruction, a row without a language and no ``language``, a row
            whose language contradicts ``language``, or two rows with the same instruction in the same language
            (the message names them).
    """
    fixed = get_language(language).code if language else None
    codes: list[str] = []
    for i, r in enumerate(rows):
        text = r.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError(
                f"Row {i} of {what} has no instruction: {sorted(r)}. alpaca_eval rows need 'instruction'."
            )
        own = r.get("language")
        if own in (None, ""):
            if fixed is None:
                raise InvalidArgumentError(
                    f"Row {i} of {what} has no 'language' column and no language was given: "
                    "pass --language CODE (e.g. --language de) for a file that holds one "
                    "language."
                )
            codes.append(fixed)
            continue
        code = get_language(own).code
        if fixed is not None and code != fixed:
            raise InvalidArgumentError(
                f"Row {i} of {what} says language {own!r}, but --language is {language!r}. "
                "Drop --language or pass the file of that language."
            )
        codes.append(code)
    index = _benchmark_index(list(dict.fromkeys(codes)), source, storage_options)
    matched, unmatched, seen = [], [], {}
    for i, (r, code) in enumerate(zip(rows, codes, strict=True)):
        hit = index.get((_norm(r["instruction"]), code))
        if hit is None:
            if len(unmatched) < _SAMPLE:
                unmatched.append({"index": i, "language": code, "instruction": r["instruction"]})
            continue
        key = (hit["id"], code)
        if key in seen:
            raise InvalidArgumentError(
                f"Rows {seen[key]} and {i} of {what} hold the same instruction in language {code!r}: "
                f"{r['instruction'][:120]!r}. Each prompt may appear once per language; remove the duplicate."
            )
        seen[key] = i
        matched.append(
            {
                **r,
                "id": hit["id"],
                "language": code,
                "english_instruction": hit["english_instruction"],
                "alpaca_eval_index": hit["alpaca_eval_index"],
            }
        )
    n_unmatched = len(rows) - len(matched)
    if not matched:
        raise InvalidArgumentError(
            f"No row of {what} matches an XL-AlpacaEval prompt (e.g. {rows[0]['instruction'][:80]!r} in "
            f"{codes[0]!r}). Check --language and that the prompts come from AlpacaEval ({source})."
        )
    return AlpacaEvalMatch(rows=matched, unmatched=unmatched, n_unmatched=n_unmatched, n_input=len(rows))


def from_model_outputs(
    rows: Sequence[dict],
    *,
    language: str | None = None,
    source: str,
    storage_options: dict | None = None,
    what: str = "the file",
) -> AlpacaEvalMatch:
    """Read an alpaca_eval ``model_outputs.json`` (``instruction``, ``output``, ``generator``, ``dataset``).

    Returns:
        :class:`AlpacaEvalMatch` whose rows also carry ``output`` (``""`` for a null output).

    Raises:
        InvalidArgumentError: see :func:`match_instructions`; or a row without ``output``.
    """
    for i, r in enumerate(rows):
        if "output" not in r:
            raise InvalidArgumentError(f"Row {i} of {what} has no 'output': {sorted(r)}.")
    match = match_instructions(rows, language=language, source=source, storage_options=storage_options, what=what)
    for r in match.rows:
        r["output"] = r["output"] or ""
    return match


def annotation_probability(preference) -> float | None:
    """P(``output_2`` beats ``output_1``) from alpaca_eval's ``preference`` (1 = output_1 better, 2 = output_2).

    None (or NaN) stays None: an unparsed annotation.

    >>> annotation_probability(2.0), annotation_probability(1.5), annotation_probability(None)
    (1.0, 0.5, None)

    Raises:
        InvalidArgumentError: a value outside ``[1, 2]``.
    """
    if preference is None or (isinstance(preference, float) and math.isnan(preference)):
        return None
    try:
        value = float(preference)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"alpaca_eval preference must be a number in [1, 2], got {preference!r}.") from None
    if not 1.0 <= value <= 2.0:
        raise InvalidArgumentError(
            f"alpaca_eval preference must be in [1, 2] (1 = output_1 better, 2 = output_2 better), got {preference!r}."
        )
    return value - 1.0


def from_annotations(
    rows: Sequence[dict],
    *,
    language: str | None = None,
    source: str,
    storage_options: dict | None = None,
    what: str = "the file",
) -> AlpacaEvalMatch:
    """Read an alpaca_eval ``annotations.json`` as judged pairs: model = ``output_2``, reference = ``output_1``.

    Returns:
        :class:`AlpacaEvalMatch` whose rows also carry ``output`` (``output_2``), ``reference`` (``output_1``),
        ``generator`` (``generator_2``), ``reference_generator`` (``generator_1``), ``annotator`` and
        ``probability`` (P(model beats reference), None when the annotation has no preference).

    Raises:
        InvalidArgumentError: see :func:`match_instructions`; or a row without the annotation columns, or with a
            preference outside ``[1, 2]``.
    """
    for i, r in enumerate(rows):
        missing = [k for k in ANNOTATION_COLUMNS if k not in r]
        if missing:
            raise InvalidArgumentError(
                f"Row {i} of {what} lacks {missing}; alpaca_eval annotations have {list(ANNOTATION_COLUMNS)}."
            )
    match = match_instructions(rows, language=language, source=source, storage_options=storage_options, what=what)
    for r in match.rows:
        r.update(
            {
                "probability": annotation_probability(r["preference"]),
                "output": r["output_2"] or "",
                "reference": r["output_1"] or "",
                "generator": r.get("generator_2"),
                "reference_generator": r.get("generator_1"),
            }
        )
    return match


class GamedBaselinesUnavailable(InvalidArgumentError):
    """``df_gamed.csv`` is not in huggingface_hub's cache (alpaca_eval's ``length_controlled_v1`` needs it)."""


def read_gamed_baselines(path: str | None = None, *, cache_dir: str | None = None):
    """Read alpaca_eval's ``df_gamed.csv`` into a :class:`~xl_suite.evaluation.metrics.GamedBaselines`.

    Args:
        path: the file; None reads ``df_gamed.csv`` of the Hub dataset ``tatsu-lab/alpaca_eval`` from
            huggingface_hub's cache (where alpaca_eval's own length-controlled win rate, or
            ``hf download tatsu-lab/alpaca_eval df_gamed.csv --repo-type dataset``, puts it). Nothing is downloaded.
        cache_dir: huggingface_hub cache folder (default: its own, ``HF_HUB_CACHE``).

    Returns:
        ``(GamedBaselines, info)`` where ``info`` holds ``path`` and ``sha256`` of the file read.

    Raises:
        GamedBaselinesUnavailable: no path given and the file is not in the cache.
        InvalidArgumentError: the file lacks a column alpaca_eval reads, or holds a value it cannot use.
    """
    import csv
    import hashlib

    import numpy as np

    from xl_suite.evaluation.metrics import GamedBaselines

    if path is None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(GAMED_REPO_ID, GAMED_FILENAME, cache_dir=cache_dir, repo_type="dataset")
        if not isinstance(found, str):
            raise GamedBaselinesUnavailable(
                f"{GAMED_FILENAME} of the Hub dataset {GAMED_REPO_ID} is not in huggingface_hub's cache "
                f"({cache_dir or 'HF_HUB_CACHE'}); fetch it with `hf download {GAMED_REPO_ID} {GAMED_FILENAME} "
                "--repo-type dataset` to get alpaca_eval's length_controlled_winrate."
            )
        path = found
    data = open(path, "rb").read()  # noqa: SIM115 - small file, read once for its hash and rows
    text = data.decode("utf-8")
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in _GAMED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidArgumentError(
            f"{path} lacks the column(s) {missing} of alpaca_eval's {GAMED_FILENAME} (it has {reader.fieldnames}); "
            f"pass the file of the Hub dataset {GAMED_REPO_ID}."
        )
    columns: dict[str, list[float]] = {c: [] for c in _GAMED_COLUMNS}
    for line, row in enumerate(reader, start=2):
        try:
            columns["index"].append(int(row["index"]))
            for c in ("preference", "std_delta_len", "instruction_difficulty"):
                columns[c].append(float(row[c]) if row[c] not in ("", "nan", "NaN") else math.nan)
            flag = row["not_gamed_baseline"].strip().lower()
            if flag not in ("true", "false", "1", "0", "1.0", "0.0"):
                raise ValueError(f"not_gamed_baseline {row['not_gamed_baseline']!r}")
            columns["not_gamed_baseline"].append(1.0 if flag in ("true", "1", "1.0") else 0.0)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"{path}, line {line}: cannot read {e} as alpaca_eval's {GAMED_FILENAME} row."
            ) from e
    if not columns["index"]:
        raise InvalidArgumentError(f"{path} holds no rows; alpaca_eval's {GAMED_FILENAME} has one per annotation.")
    pref = np.asarray(columns["preference"], dtype=float)
    bad = np.flatnonzero(~np.isnan(pref) & ((pref < 0) | (pref > 1)))
    if bad.size:
        raise InvalidArgumentError(
            f"{path}, line {int(bad[0]) + 2}: preference {float(pref[bad[0]])!r} is outside [0, 1] "
            f"(alpaca_eval's {GAMED_FILENAME} stores P(output_2 wins))."
        )
    gamed = GamedBaselines(
        index=np.asarray(columns["index"], dtype=int),
        preference=pref,
        std_delta_len=np.asarray(columns["std_delta_len"], dtype=float),
        instruction_difficulty=np.asarray(columns["instruction_difficulty"], dtype=float),
        not_gamed_baseline=np.asarray(columns["not_gamed_baseline"], dtype=float),
    )
    return gamed, {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}


def length_controlled_v1_reason(rows: Sequence[dict]) -> str | None:
    """Why alpaca_eval's ``length_controlled_v1`` does not apply to these judged rows; None when it does.

    It applies to alpaca_eval's own annotations: every row judged by :data:`LC_V1_ANNOTATOR` against
    :data:`LC_V1_BASELINE` (``generator_1``), of one model (``generator_2``), on an AlpacaEval prompt
    (``alpaca_eval_index``), in English.

    >>> row = {"annotator": "weighted_alpaca_eval_gpt4_turbo", "generator_1": "gpt4_1106_preview",
    ...        "generator_2": "m", "alpaca_eval_index": 0, "language": "en"}
    >>> length_controlled_v1_reason([row]) is None
    True
    >>> length_controlled_v1_reason([{**row, "annotator": "my_judge"}])
    "judged by ['my_judge'], not alpaca_eval's weighted_alpaca_eval_gpt4_turbo"
    """
    if not rows:
        return "no judged rows"
    annotators = sorted({str(r.get("annotator")) for r in rows})
    if annotators != [LC_V1_ANNOTATOR]:
        return f"judged by {annotators}, not alpaca_eval's {LC_V1_ANNOTATOR}"
    baselines = sorted({str(r.get("generator_1")) for r in rows})
    if baselines != [LC_V1_BASELINE]:
        return f"the baseline is {baselines}, not alpaca_eval's {LC_V1_BASELINE}"
    if len({r.get("generator_2") for r in rows}) != 1:
        return "the rows hold more than one model (generator_2)"
    if any(r.get("alpaca_eval_index") is None for r in rows):
        return "a row is not matched to an AlpacaEval prompt"
    if not any(r.get("language") == "en" for r in rows):
        return "no row is in English (the instruction difficulties are those of AlpacaEval's English prompts)"
    return None


def add_length_controlled_v1(
    result,
    rows: Sequence[dict],
    *,
    gamed_path: str | None = None,
    cache_dir: str | None = None,
) -> None:
    """Fill ``length_controlled_winrate`` with alpaca_eval's ``length_controlled_v1`` where it applies.

    Where it applies (see :func:`length_controlled_v1_reason`: alpaca_eval's own annotations, English rows), the
    ``en`` row of ``result.table`` (and ``overall`` when every row is English) gets ``length_controlled_winrate``;
    ``result.meta["length_control"]`` says which estimator each column holds, and why the v1 column is empty
    where it is. Never downloads: ``df_gamed.csv`` comes from ``gamed_path`` or huggingface_hub's cache.

    Args:
        result: the :class:`~xl_suite.evaluation.results.EvaluationResult` of these rows (same order).
        rows: the judged rows, as :func:`from_annotations` returns them.
        gamed_path: ``df_gamed.csv`` (default: huggingface_hub's cache).
        cache_dir: huggingface_hub cache folder.
    """
    from xl_suite.evaluation.metrics import length_controlled_v1_win_rate

    info = result.meta.setdefault("length_control", {})
    if len(rows) != len(result.per_sample):
        raise InvalidArgumentError(
            f"add_length_controlled_v1 got {len(rows)} rows for a result of {len(result.per_sample)} items."
        )
    reason = length_controlled_v1_reason(rows)
    gamed = None
    if reason is None:
        try:
            gamed, file_info = read_gamed_baselines(gamed_path, cache_dir=cache_dir)
        except GamedBaselinesUnavailable as e:
            reason = str(e)
    if reason is not None:
        info["length_controlled_winrate"] = f"not computed: {reason}"
        return
    english = [i for i, r in enumerate(rows) if r.get("language") == "en"]
    samples = [result.per_sample[i] for i in english]
    out = length_controlled_v1_win_rate(
        [s.get("p_model_wins") for s in samples],
        [s["model_length"] for s in samples],
        [s["reference_length"] for s in samples],
        [rows[i]["alpaca_eval_index"] for i in english],
        gamed,
    )
    targets = ["en"] + (["overall"] if len(english) == len(rows) else [])
    for name in targets:
        result.table[name]["length_controlled_winrate"] = out["length_controlled_winrate"]
    info["length_controlled_winrate"] = (
        f"alpaca_eval's length_controlled_v1 ({', '.join(targets)}; {len(english)} judgments), from "
        f"{file_info['path']} (sha256 {file_info['sha256'][:12]})"
    )
    info["length_controlled_v1"] = {**file_info, **{k: v for k, v in out.items() if k != "length_controlled_winrate"}}


# ----------------------------------------------------------------------------------------------------------------
# alpaca_eval files out


def describe_items(result, rows: Sequence[dict]) -> None:
    """Copy what alpaca_eval's files need and the result does not hold from answer rows into ``result.inputs``.

    ``rows`` are in the result's item order (as passed to ``evaluate_responses``); each may hold ``dataset``,
    ``reference_generator`` (or alpaca_eval's ``generator_1``), and, for judgments read from alpaca_eval's
    ``annotations.json``, ``annotator``, ``raw_completion``, ``price_per_example`` and ``time_per_example``.
    """
    if len(rows) != len(result.inputs):
        raise InvalidArgumentError(f"describe_items got {len(rows)} rows for a result of {len(result.inputs)} items.")
    for item, row in zip(result.inputs, rows, strict=True):
        extra = {k: row.get(k) for k in _ITEM_EXTRAS if row.get(k) is not None}
        if "reference_generator" not in extra and row.get("generator_1") is not None:
            extra["reference_generator"] = row["generator_1"]
        item.update(extra)
    references = {item.get("reference_generator") for item in result.inputs}
    if len(references) == 1 and None not in references:
        result.meta["reference_model"] = references.pop()


def match_summary(match: AlpacaEvalMatch, kind: str, what: str) -> dict:
    """What a report records about an alpaca_eval file it read (``meta["alpaca_eval"]``)."""
    return {
        "kind": kind,
        "file": str(what),
        "n_rows": match.n_input,
        "n_matched": len(match.rows),
        "n_unmatched": match.n_unmatched,
        "unmatched_sample": match.unmatched,
        "warning": match.summary(repr(str(what))),
    }


def model_output_rows(result) -> list[dict]:
    """The model's answers as alpaca_eval's ``model_outputs.json`` rows (empty without the instructions).

    Fields: :data:`MODEL_OUTPUT_FIELDS` (``generator`` is the evaluated model's name), then ``id`` and ``language``.
    """
    if not result.inputs or any(item.get("instruction") is None for item in result.inputs):
        return []
    generator = result.meta.get("model") or "model"
    return [
        {
            "dataset": item.get("dataset"),
            "instruction": item["instruction"],
            "output": item["output"],
            "generator": generator,
            "id": item["id"],
            "language": item["language"],
        }
        for item in result.inputs
    ]


def annotation_rows(result) -> list[dict]:
    """The judgments as alpaca_eval's ``annotations.json`` rows: one per (answer, reference) pair.

    ``output_1`` is the reference (alpaca_eval's baseline), ``output_2`` the model's answer, and ``preference`` is
    alpaca_eval's: in ``[1, 2]``, ``1 + P(model beats reference)`` (2 = the model's answer better, 1.5 a tie), the
    mean over the presentation orders judged, null when no judgment of the pair was parsed. ``raw_completion`` is the
    judge's reply (a dict by order, ``model_first``/``model_second``, when both orders were judged);
    ``price_per_example`` is the USD cost of the pair's judgments at the preset's prices (null without prices);
    ``time_per_example`` the seconds this run spent on them (the ledger's judging time split evenly over the
    judgments made in this run; null for judgments read from the cache). Fields: :data:`ANNOTATION_FIELDS`, then
    ``id`` and ``language``. Empty when no judge ran and no judgments were read.
    """
    if not result.judged or not result.inputs:
        return []
    if result.judgments:
        return _annotations_of_judgments(result)
    return _annotations_read_elsewhere(result)


def _annotation(result, item: dict, reference: str, p: float | None, **fields) -> dict:
    row = {
        "instruction": item.get("instruction"),
        "output_1": reference,
        "generator_1": item.get("reference_generator") or result.meta.get("reference_model") or "reference",
        "dataset": item.get("dataset"),
        "output_2": item["output"],
        "generator_2": result.meta.get("model") or "model",
        "annotator": item.get("annotator") or result.meta["judge"]["model"],
        "preference": None if p is None else 1.0 + p,
        "price_per_example": fields.get("price_per_example"),
        "time_per_example": fields.get("time_per_example"),
        "raw_completion": fields.get("raw_completion"),
    }
    return {**row, "id": item["id"], "language": item["language"]}


def _annotations_read_elsewhere(result) -> list[dict]:
    rows = []
    for item, sample in zip(result.inputs, result.per_sample, strict=True):
        reference = item["references"][0] if item["references"] else None
        extras = {k: item.get(k) for k in ("price_per_example", "time_per_example", "raw_completion")}
        rows.append(_annotation(result, item, reference, sample.get("p_model_wins"), **extras))
    return rows


def _annotations_of_judgments(result) -> list[dict]:
    """One row per pair; with a jury, the pair's preference is the mean over the judges of each one's mean over the
    orders (the jury's verdict), its raw completions are keyed ``judge:order``, its price and time summed."""
    judge = result.meta["judge"]
    members = judge.get("jury") or [judge]
    jury = len(members) > 1
    prices, seconds_each = {}, {}
    for m in members:
        config = m.get("config") or {}
        prices[m["model"]] = (config.get("price_input_per_mtok"), config.get("price_output_per_mtok"))
        ledger = result.ledger.get(f"pairwise_judge:{m['model']}" if jury else "pairwise_judge") or {}
        now = ledger.get("judged_now") or 0
        seconds_each[m["model"]] = ledger["seconds"] / now if now and ledger.get("seconds") is not None else None
    by_pair: dict[int, list[dict]] = {}
    for r in result.judgments:
        by_pair.setdefault(r["pair_index"], []).append(r)
    rows = []
    for pair in sorted(by_pair):
        judgments = by_pair[pair]
        by_judge: dict[str, list[dict]] = {}
        for r in judgments:
            by_judge.setdefault(r.get("judge_model") if jury else judge["model"], []).append(r)
        verdicts = [_mean_parsed(rs) for rs in by_judge.values()]
        parsed = [v for v in verdicts if v is not None]
        raw = {
            (f"{r.get('judge_model')}:{r['order']}" if jury else r["order"]): r.get("raw_completion")
            for r in judgments
        }
        pair_prices = [_price(rs, prices.get(name, (None, None))) for name, rs in by_judge.items()]
        times = [_seconds(rs, seconds_each.get(name)) for name, rs in by_judge.items()]
        rows.append(
            _annotation(
                result,
                result.inputs[judgments[0]["item_index"]],
                judgments[0]["output_reference"],
                sum(parsed) / len(parsed) if parsed else None,
                price_per_example=None if None in pair_prices else sum(pair_prices),
                time_per_example=None if not times or None in times else sum(times),
                raw_completion=next(iter(raw.values())) if len(raw) == 1 else raw,
            )
        )
    return rows


def _mean_parsed(judgments: list[dict]) -> float | None:
    parsed = [r["p_model_wins"] for r in judgments if r.get("p_model_wins") is not None]
    return sum(parsed) / len(parsed) if parsed else None


def _seconds(judgments: list[dict], seconds_each: float | None) -> float | None:
    """Seconds this run spent on these judgments (None when all came from the cache)."""
    fresh = [r for r in judgments if not r.get("cached") and not is_rule(str(r.get("parse_status", "")))]
    return seconds_each * len(fresh) if seconds_each is not None and fresh else None


def _price(judgments: list[dict], prices: tuple) -> float | None:
    """USD of the judgments' tokens at (input, output) USD per million tokens; None without prices or tokens."""
    if None in prices:
        return None
    tokens = [(r.get("prompt_tokens"), r.get("completion_tokens")) for r in judgments]
    if any(None in t for t in tokens):
        return None
    return sum(p * prices[0] + c * prices[1] for p, c in tokens) / 1e6
