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
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import get_language


__all__ = [
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_RENAMES",
    "ANNOTATION_COLUMNS",
    "AlpacaEvalMatch",
    "file_kind",
    "match_instructions",
    "from_model_outputs",
    "from_annotations",
    "annotation_probability",
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
    "length_controlled_win_rate": "length_controlled_winrate",
    "avg_model_length": "avg_length",
}
#: Columns every alpaca_eval annotation row has (``annotator`` and the generators are optional).
ANNOTATION_COLUMNS: tuple[str, ...] = ("instruction", "output_1", "output_2", "preference")

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
        rows: the matched rows, each with its original columns plus ``id``, ``language`` and
            ``english_instruction`` (in file order).
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
        matched.append({**r, "id": hit["id"], "language": code, "english_instruction": hit["english_instruction"]})
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
