"""Judges compared per language: does an LLM judge agree with another (or with humans) in *this* language?

alpaca_eval answers the question for English (its evaluators leaderboard); :func:`compare_judges` answers it per
language for any judges that judged the same pairs: xl-suite reports (their ``annotations.json`` and, for position
bias, their tables) or alpaca_eval's ``annotations.json``. For each language and each pair of judges:

* ``agreement``: alpaca_eval's ``Analyzer.agreement_of_annotations`` with the ``absolute`` scoring rule and one
  annotation each: ``100 * (1 - mean |preference_1 - preference_2|)`` over the pairs both judged (preferences in
  ``[1, 2]``, matched by ``instruction``, ``output_1``, ``output_2``);
* ``cohen_kappa``: Cohen's kappa of the verdicts (``output_1`` better, tie, ``output_2`` better);
* ``spearman``/``pearson``: correlation of the two judges' win rates of the models (``generator_2``), when they
  judged two models or more (alpaca_eval's ``estimate_correlations``);

and for each judge: ``prefer_first`` (share of decided judgments won by the answer shown first) and
``order_consistency`` (share of pairs judged in both orders with the same winner), from xl-suite reports (alpaca_eval
does not record the order it showed); ``prefer_longer`` (alpaca_eval's ``probability_prefer_longer``: among pairs
whose outputs differ by more than 30 characters and that are not ties, the share won by the longer one);
``price_per_1000`` and ``seconds_per_1000`` (USD and seconds per 1,000 judged pairs, from ``price_per_example`` and
``time_per_example``: alpaca_eval's, or xl-suite's, which come from the judge's token ledger); and, against a gold
file of human preferences (``prompt``, ``chosen``, ``rejected``, ``language``, as MM-Eval and M-RewardBench publish
them), ``gold_accuracy``: the share of gold pairs where the judge prefers ``chosen`` (a tie counts half).

Rows of ``judges.csv``: for each language (``overall`` first), one row per pair of judges in the order given, so the
first row is the first two judges' agreement over all languages.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.metrics import TIE_TOLERANCE
from xl_suite.evaluation.results import OVERALL


__all__ = ["JUDGES_COLUMNS", "Judge", "JudgeComparison", "compare_judges", "read_judge"]

#: Pairs whose outputs differ by at most this many characters do not count for ``prefer_longer`` (alpaca_eval's
#: ``significant_delta_length``).
SIGNIFICANT_DELTA_LENGTH = 30
_PAIR_COLUMNS = ("agreement", "cohen_kappa", "n_pairs", "spearman", "pearson", "n_models")
_JUDGE_COLUMNS = (
    "n_judged",
    "prefer_first",
    "order_consistency",
    "prefer_longer",
    "price_per_1000",
    "seconds_per_1000",
    "gold_accuracy",
    "n_gold",
)
#: ``judges.csv``'s columns: the language, the two judges, their agreement statistics, then each judge's own.
JUDGES_COLUMNS: tuple[str, ...] = (
    "language",
    "judge_1",
    "judge_2",
    *_PAIR_COLUMNS,
    *(f"{c}_{k}" for k in (1, 2) for c in _JUDGE_COLUMNS),
)


@dataclass
class Judge:
    """One judge's annotations (alpaca_eval's format, plus ``language``) and what its reports say of its orders.

    Attributes:
        name: the judge (its ``annotator``, or the file's name).
        source: the paths it was read from.
        annotations: rows with ``instruction``, ``output_1``, ``output_2``, ``generator_2``, ``preference`` (in
            ``[1, 2]``, None when unparsed), ``language``, ``price_per_example``, ``time_per_example``.
        orders: language (and ``overall``) -> ``prefer_first`` and ``order_consistency`` (0-100) from xl-suite
            reports; empty for alpaca_eval's files.
    """

    name: str
    source: str
    annotations: list[dict[str, Any]]
    orders: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class JudgeComparison:
    """The result of :func:`compare_judges`: ``rows`` as in ``judges.csv``, and notes for the reader."""

    judges: list[Judge]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``judges.csv`` and ``judges.json`` (which the leaderboard page shows) into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / "judges.csv", "json": out / "judges.json"}
        with paths["csv"].open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=JUDGES_COLUMNS)
            w.writeheader()
            w.writerows({k: _cell(r.get(k)) for k in JUDGES_COLUMNS} for r in self.rows)
        data = {
            "columns": list(JUDGES_COLUMNS),
            "rows": [{k: _json(r.get(k)) for k in JUDGES_COLUMNS} for r in self.rows],
            "judges": [{"name": j.name, "source": j.source} for j in self.judges],
            "notes": self.notes,
        }
        paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        return paths


def compare_judges(
    judges: Sequence[Judge],
    *,
    gold: Sequence[dict] | None = None,
) -> JudgeComparison:
    """Compare judges per language (see the module docstring for every statistic).

    Args:
        judges: two or more, as :func:`read_judge` reads them, in the order the rows pair them.
        gold: human preferences, rows with ``prompt``, ``chosen``, ``rejected`` and ``language``.

    Raises:
        InvalidArgumentError: fewer than two judges, two with the same name, or judges with no pair in common.
    """
    if len(judges) < 2:
        raise InvalidArgumentError(f"compare-judges needs two judges or more, got {len(judges)}.")
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"Two judges have the same name ({names}): files of one annotator are one judge (e.g. its "
            "annotations of several models). Pass them as one JUDGE joined by commas (a.json,b.json), and another "
            "judge's judgments of the same pairs beside it."
        )
    tables = [_by_pair(j) for j in judges]
    common = set.intersection(*(set(t) for t in tables))
    if not common:
        raise InvalidArgumentError(
            f"{names[0]} and the other judges share no judged pair (pairs are matched by instruction, output_1 and "
            "output_2): compare-judges needs judgments of the same pairs, e.g. one model's answers judged by "
            "several judges."
        )
    notes = [
        f"{j.name}: {len(t)} judged pairs, {len(set(t) & common)} judged by every judge ({j.source})"
        for j, t in zip(judges, tables, strict=True)
    ]
    gold_index = _gold_index(gold or [])
    languages = [OVERALL, *sorted({k[3] for t in tables for k in t})]
    rows = []
    for language in languages:
        in_language = [_language(t, language) for t in tables]
        stats = [_judge_stats(j, t, language, gold_index) for j, t in zip(judges, in_language, strict=True)]
        for a, b in combinations(range(len(judges)), 2):
            row = {"language": language, "judge_1": names[a], "judge_2": names[b]}
            row.update(_pair_stats(in_language[a], in_language[b]))
            row.update({f"{k}_1": v for k, v in stats[a].items()})
            row.update({f"{k}_2": v for k, v in stats[b].items()})
            rows.append(row)
    if gold is not None:
        notes.append(f"gold: {len(gold_index)} human-preference pairs")
    return JudgeComparison(judges=list(judges), rows=rows, notes=notes)


# ----------------------------------------------------------------------------------------------------------------
# reading


def read_judge(paths: str | Path | Sequence[str | Path], *, language: str | None = None) -> Judge:
    """One judge's judgments from xl-suite report folders and/or alpaca_eval ``annotations.json`` files.

    Args:
        paths: one path or several (e.g. one file per model); a report folder contributes its ``annotations.json``
            and the position-bias statistics of its table.
        language: the language of rows without a ``language`` column (alpaca_eval's files), e.g. ``"en"``.

    Raises:
        InvalidArgumentError: a path that is neither, rows without the annotation columns, a row without a language
            when ``language`` is not given, or files judged by different annotators.
    """
    from xl_suite.languages import get_language

    items = [paths] if isinstance(paths, str | Path) else list(paths)
    annotations: list[dict] = []
    orders: dict[str, dict[str, float]] = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            orders.update(_orders_of_report(path))
            path = path / "annotations.json"
            if not path.is_file():
                raise InvalidArgumentError(
                    f"{str(item)!r} has no annotations.json: rerun `xl-suite evaluate` (with a judge) to write it."
                )
        annotations.extend(_read_annotations(path, language, get_language))
    annotators = sorted({str(a.get("annotator")) for a in annotations if a.get("annotator")})
    if len(annotators) > 1:
        raise InvalidArgumentError(
            f"{[str(i) for i in items]} hold the judgments of several annotators ({annotators}); pass each judge's "
            "files as its own argument."
        )
    name = annotators[0] if annotators else Path(items[0]).stem
    return Judge(name=name, source=", ".join(str(i) for i in items), annotations=annotations, orders=orders)


def _read_annotations(path: Path, language: str | None, get_language) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"Cannot read {str(path)!r} as alpaca_eval annotations ({e}).") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidArgumentError(f"{str(path)!r} is not a list of annotation rows.")
    fixed = get_language(language).code if language else None
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in ("instruction", "output_1", "output_2", "preference") if k not in r]
        if missing:
            raise InvalidArgumentError(f"Row {i} of {str(path)!r} lacks {missing}: not alpaca_eval annotations.")
        own = r.get("language")
        if own in (None, "") and fixed is None:
            raise InvalidArgumentError(
                f"Row {i} of {str(path)!r} has no 'language' column: pass --language CODE (e.g. --language en)."
            )
        pref = r["preference"]
        pref = None if pref is None or (isinstance(pref, float) and math.isnan(pref)) else float(pref)
        if pref == 0.0:  # alpaca_eval's old encoding of a draw
            pref = 1.5
        if pref is not None and not 1.0 <= pref <= 2.0:
            raise InvalidArgumentError(f"Row {i} of {str(path)!r}: preference {pref!r} is outside [1, 2].")
        out.append({**r, "preference": pref, "language": get_language(own).code if own else fixed})
    return out


def _orders_of_report(folder: Path) -> dict[str, dict[str, float]]:
    from xl_suite.evaluation.report import read_report

    report = read_report(folder)
    out = {}
    for name, row in report.table.items():
        first, agree = row.get("prefer_first_rate"), row.get("order_agreement")
        out[name] = {
            "prefer_first": 100.0 * first if _finite(first) else math.nan,
            "order_consistency": 100.0 * agree if _finite(agree) else math.nan,
        }
    return out


def _gold_index(gold: Sequence[dict]) -> dict[tuple[str, frozenset], dict]:
    from xl_suite.languages import get_language

    index = {}
    for i, g in enumerate(gold):
        missing = [k for k in ("prompt", "chosen", "rejected", "language") if not g.get(k)]
        if missing:
            raise InvalidArgumentError(
                f"Gold row {i} lacks {missing}; a gold file has prompt, chosen, rejected and language (MM-Eval, "
                "M-RewardBench)."
            )
        index[(g["prompt"], frozenset((g["chosen"], g["rejected"])))] = {
            **g,
            "language": get_language(g["language"]).code,
        }
    return index


# ----------------------------------------------------------------------------------------------------------------
# statistics


def _by_pair(judge: Judge) -> dict[tuple, dict]:
    """Annotations keyed by (instruction, output_1, output_2, language); the first of duplicates is kept."""
    out: dict[tuple, dict] = {}
    for a in judge.annotations:
        out.setdefault((a["instruction"], a["output_1"], a["output_2"], a["language"]), a)
    return out


def _language(table: dict[tuple, dict], language: str) -> dict[tuple, dict]:
    return table if language == OVERALL else {k: v for k, v in table.items() if k[3] == language}


def _verdict(pref: float) -> int:
    """1: output_1 better, 0: tie, 2: output_2 better."""
    if abs(pref - 1.5) <= TIE_TOLERANCE:
        return 0
    return 2 if pref > 1.5 else 1


def _pair_stats(a: dict[tuple, dict], b: dict[tuple, dict]) -> dict[str, Any]:
    keys = [k for k in a if k in b and a[k]["preference"] is not None and b[k]["preference"] is not None]
    out: dict[str, Any] = {"n_pairs": len(keys), "agreement": math.nan, "cohen_kappa": math.nan}
    if keys:
        pa = np.array([a[k]["preference"] for k in keys])
        pb = np.array([b[k]["preference"] for k in keys])
        out["agreement"] = 100.0 * (1.0 - float(np.mean(np.abs(pa - pb))))
        out["cohen_kappa"] = _kappa([_verdict(x) for x in pa], [_verdict(x) for x in pb])
    out.update(_ranking_correlation(a, b))
    return out


def _kappa(x: list[int], y: list[int]) -> float:
    """Cohen's kappa of two label sequences (NaN when chance agreement is 1)."""
    n = len(x)
    labels = sorted(set(x) | set(y))
    observed = sum(i == j for i, j in zip(x, y, strict=True)) / n
    expected = sum((x.count(c) / n) * (y.count(c) / n) for c in labels)
    return (observed - expected) / (1.0 - expected) if expected < 1.0 else math.nan


def _win_rates(table: dict[tuple, dict]) -> dict[str, float]:
    by_model: dict[str, list[float]] = {}
    for a in table.values():
        if a["preference"] is not None:
            by_model.setdefault(str(a.get("generator_2")), []).append(a["preference"] - 1.0)
    return {m: 100.0 * float(np.mean(v)) for m, v in by_model.items()}


def _ranking_correlation(a: dict[tuple, dict], b: dict[tuple, dict]) -> dict[str, Any]:
    wa, wb = _win_rates(a), _win_rates(b)
    models = sorted(set(wa) & set(wb))
    out: dict[str, Any] = {"n_models": len(models), "spearman": math.nan, "pearson": math.nan}
    if len(models) >= 2:
        x, y = np.array([wa[m] for m in models]), np.array([wb[m] for m in models])
        out["pearson"] = _pearson(x, y)
        out["spearman"] = _pearson(_ranks(x), _ranks(y))
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.ravel()]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else math.nan


def _judge_stats(judge: Judge, table: dict[tuple, dict], language: str, gold: dict) -> dict[str, Any]:
    parsed = [a for a in table.values() if a["preference"] is not None]
    orders = judge.orders.get(language, {})
    out: dict[str, Any] = {
        "n_judged": len(parsed),
        "prefer_first": orders.get("prefer_first", math.nan),
        "order_consistency": orders.get("order_consistency", math.nan),
        "prefer_longer": _prefer_longer(parsed),
        "price_per_1000": _per_1000(table.values(), "price_per_example"),
        "seconds_per_1000": _per_1000(table.values(), "time_per_example"),
    }
    out.update(_gold_accuracy(table, language, gold))
    return out


def _prefer_longer(parsed: list[dict]) -> float:
    """alpaca_eval's probability_prefer_longer (ties and pairs within 30 characters left out), in percent."""
    n = longer = 0
    for a in parsed:
        if abs(a["preference"] - 1.5) <= TIE_TOLERANCE:
            continue
        best, worse = (a["output_1"], a["output_2"]) if a["preference"] < 1.5 else (a["output_2"], a["output_1"])
        if abs(len(best) - len(worse)) > SIGNIFICANT_DELTA_LENGTH:
            n += 1
            longer += len(best) > len(worse)
    return 100.0 * longer / n if n else math.nan


def _per_1000(rows, column: str) -> float:
    values = [float(r[column]) for r in rows if _finite(r.get(column))]
    return 1000.0 * float(np.mean(values)) if values else math.nan


def _gold_accuracy(table: dict[tuple, dict], language: str, gold: dict) -> dict[str, Any]:
    if not gold:
        return {"gold_accuracy": math.nan, "n_gold": 0}
    scores = []
    for a in table.values():
        g = gold.get((a["instruction"], frozenset((a["output_1"], a["output_2"]))))
        if g is None or a["preference"] is None or (language != OVERALL and g["language"] != language):
            continue
        p_output_2 = a["preference"] - 1.0
        p_chosen = p_output_2 if a["output_2"] == g["chosen"] else 1.0 - p_output_2
        scores.append(0.5 if abs(p_chosen - 0.5) <= TIE_TOLERANCE else float(p_chosen > 0.5))
    return {"gold_accuracy": 100.0 * float(np.mean(scores)) if scores else math.nan, "n_gold": len(scores)}


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _cell(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _json(v):
    return None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v
