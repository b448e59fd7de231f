"""Reports of an evaluation: a plain-text table, ``report.md``, ``leaderboard.csv``, ``results.json`` and a plot."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.alpaca_eval import LEADERBOARD_COLUMNS, LEADERBOARD_RENAMES
from xl_suite.evaluation.results import OVERALL, REPORT_LAYOUT, EvaluationResult
from xl_suite.evaluation.text import format_table
from xl_suite.evaluation.text import format_value as _fmt
from xl_suite.evaluation.text import table_columns as _columns
from xl_suite.sources import write_jsonl
from xl_suite.status import RowStatus, is_rule


logger = logging.getLogger(__name__)

__all__ = ["Report", "format_table", "leaderboard_rows", "plot_available", "read_report", "write_report"]


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _csv_columns(result: EvaluationResult) -> list[str]:
    """CSV columns: alpaca_eval's leaderboard columns under its names first, then ours."""
    present = {LEADERBOARD_RENAMES.get(k, k) for row in result.table.values() for k in row}
    if result.judged:
        present.add("mode")
    cols = ["model", "language"] + [c for c in LEADERBOARD_COLUMNS if c in present]
    extra = [
        "lc_minimal_winrate",
        "lc_minimal_standard_error",
        "n",
        "ci_low",
        "ci_high",
        "n_unparsed",
        "n_judgments",
        "n_unparsed_judgments",
        "parse_rate",
        "prefer_first_rate",
        "order_agreement",
        "prefer_longer_rate",
        "length_spearman",
    ]
    cols += [c for c in extra if c in present]
    cols += sorted(k for k in present if k.startswith("rubric_") and k != "rubric_parse_rate")
    cols += [
        c
        for c in ("rubric_parse_rate", "language_fidelity", "line_pass_rate", "n_empty", "avg_reference_length")
        if c in present
    ]
    return cols


def leaderboard_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """The ``leaderboard.csv`` rows: one per language and ``overall``, under alpaca_eval's column names.

    ``n_losses`` is written as ``n_wins_base`` and ``avg_model_length`` as ``avg_length`` (see
    :data:`xl_suite.evaluation.alpaca_eval.LEADERBOARD_RENAMES`); ``mode`` is ``"community"``, as alpaca_eval
    writes for a model evaluated outside its official leaderboard. ``length_controlled_winrate`` is present only
    where alpaca_eval's own estimator (``length_controlled_v1``) was computed; ours is ``lc_minimal_winrate``.
    NaN is written as an empty cell.
    """
    model = result.meta.get("model") or "model"
    rows = []
    for row in result.table.values():
        out: dict[str, Any] = {"model": model}
        if result.judged:
            out["mode"] = "community"
        for k, v in row.items():
            out[LEADERBOARD_RENAMES.get(k, k)] = "" if isinstance(v, float) and math.isnan(v) else v
        rows.append(out)
    return rows


def plot_available() -> bool:
    """True when matplotlib (the ``plot`` extra) is installed; the report then includes ``win_rates.png``."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _plot(result: EvaluationResult, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result.table)
    x = list(range(len(names)))
    judged = result.judged
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) * (2 if judged else 1)), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if judged else 1, squeeze=False)[0]
    if judged:
        ax = axes[0]
        wr = [result.table[k].get("win_rate", math.nan) for k in names]
        lo = [
            max(0.0, w - result.table[k].get("ci_low", w)) if not math.isnan(w) else 0.0
            for k, w in zip(names, wr, strict=True)
        ]
        hi = [
            max(0.0, result.table[k].get("ci_high", w) - w) if not math.isnan(w) else 0.0
            for k, w in zip(names, wr, strict=True)
        ]
        colors = ["#4C72B0" if k != OVERALL else "#333333" for k in names]
        ax.bar(x, [0.0 if math.isnan(w) else w for w in wr], yerr=[lo, hi], capsize=4, color=colors)
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 100)
        ax.set_ylabel("win rate vs reference (%)")
        conf = int(round(100 * result.meta.get("confidence", 0.95)))
        ax.set_title(f"Win rate ({conf}% bootstrap CI)")
    ax = axes[-1]
    fidelity = [result.table[k].get("language_fidelity", math.nan) for k in names]
    ax.bar(
        x,
        [0.0 if math.isnan(f) else f for f in fidelity],
        color=["#55A868" if k != OVERALL else "#333333" for k in names],
    )
    ax.set_xticks(x, names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("responses in the target language (%)")
    ax.set_title("Language fidelity")
    title = result.meta.get("model") or "model"
    if judged:
        title += f" - judge: {result.meta['judge']['model']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _json_default(o):
    if isinstance(o, set):
        return sorted(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def _clean(o):
    """NaN -> None recursively (strict JSON)."""
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def write_report(result: EvaluationResult, output_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write the report folder; existing report files in it are replaced.

    Files: ``report.md`` (tables, settings, diagnostics, ledger, unparsed judgments), ``leaderboard.csv`` (one row
    per language and ``overall``), ``win_rates.png`` (win rate per language with CI bars, language fidelity beside
    it; only with matplotlib, the ``plot`` extra), ``summary.json``, ``per_sample.jsonl``, and with a judge ``judgments.jsonl`` and ``rubric.jsonl``.
    Also alpaca_eval's own files: ``annotations.json`` (with a judge, or judgments read from alpaca_eval; see
    :func:`xl_suite.evaluation.alpaca_eval.annotation_rows`) and ``model_outputs.json`` (when the instructions are
    known).

    Returns:
        file kind -> path.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    model = result.meta.get("model") or "model"

    paths["csv"] = out / "leaderboard.csv"
    with paths["csv"].open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_csv_columns(result), extrasaction="ignore")
        w.writeheader()
        w.writerows(leaderboard_rows(result))

    png = out / "win_rates.png"
    png.unlink(missing_ok=True)  # never leave a plot of an earlier run beside this report
    if plot_available():
        _plot(result, png)
        paths["png"] = png
    else:
        logger.warning(
            "matplotlib is not installed: the report is written without win_rates.png (pip install 'xl-suite[plot]')."
        )

    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(
        json.dumps(_clean(result.to_dict()), indent=2, ensure_ascii=False, default=_json_default), encoding="utf-8"
    )
    paths["per_sample"] = out / "per_sample.jsonl"
    write_jsonl([_clean(r) for r in result.per_sample], paths["per_sample"])
    if result.judged:
        paths["judgments"] = out / "judgments.jsonl"
        write_jsonl([_clean(r) for r in result.judgments], paths["judgments"])
        if result.rubric_rows:
            paths["rubric"] = out / "rubric.jsonl"
            write_jsonl([_clean(r) for r in result.rubric_rows], paths["rubric"])

    paths.update(_write_alpaca_eval_files(result, out))

    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(
        _markdown(result, title or f"XL-AlpacaEval report: {model}", with_plot="png" in paths), encoding="utf-8"
    )
    return paths


def _write_alpaca_eval_files(result: EvaluationResult, out: Path) -> dict[str, Path]:
    """alpaca_eval's ``annotations.json`` (with a judge) and ``model_outputs.json`` (with the instructions).

    A file the result cannot fill is removed, never left from an earlier run.
    """
    from xl_suite.evaluation.alpaca_eval import annotation_rows, model_output_rows

    paths = {}
    for kind, name, rows in (
        ("annotations", "annotations.json", annotation_rows(result)),
        ("model_outputs", "model_outputs.json", model_output_rows(result)),
    ):
        path = out / name
        if rows:
            path.write_text(json.dumps(_clean(rows), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            paths[kind] = path
        else:
            path.unlink(missing_ok=True)
    return paths


def _judge_line(judge: dict) -> str:
    members = judge.get("jury") or [judge]
    line = "; ".join(f"{m['model']} ({m['backend']}, revision {m['revision'] or '-'})" for m in members)
    return f"jury of {len(members)}: {line}; verdict = mean of their P(model wins)" if judge.get("jury") else line


def _jury_section(result: EvaluationResult) -> list[str]:
    """Each jury member's win rate beside the jury's, per language."""
    names = (result.meta.get("jury") or {}).get("judges")
    if not names:
        return []
    rows = [
        [lang, *[_fmt(row.get("win_rate_by_judge", {}).get(n)) for n in names], _fmt(row.get("win_rate"))]
        for lang, row in result.table.items()
    ]
    return [
        "## Jury",
        "",
        "Win rate per judge and of the jury (its verdict on an item is the mean of the judges' P(model wins)); "
        "every judge's verdicts are in `judgments.jsonl` (`judge_model`) and per item in `per_sample.jsonl` "
        "(`p_model_wins_by_judge`). The rubric is scored by the first judge.",
        "",
        _markdown_table(["language", *names, "jury"], rows),
        "",
    ]


def _length_control_settings(meta: dict) -> list[list[str]]:
    """Which estimator each length-controlled column holds (and why alpaca_eval's is empty where it is)."""
    info = meta.get("length_control") or {}
    return [[f"`{column}`", text] for column, text in info.items() if isinstance(text, str)] or [
        ["length control", str(meta.get("lc_method"))]
    ]


def _markdown(result: EvaluationResult, title: str, *, with_plot: bool) -> str:
    meta = result.meta
    md = [f"# {title}", "", f"_Generated {meta.get('created')} by xl-suite {meta.get('xl_suite_version')}._", ""]
    md += ["> " + meta["notes"], ""]
    settings = [
        ["model", str(meta.get("model") or "-")],
        ["items", str(meta.get("n_items"))],
        ["languages", ", ".join(meta.get("languages", []))],
    ]
    judge = meta.get("judge")
    if judge and judge.get("config") is None:
        settings += [
            ["judge", f"none run here: preferences read from annotations by {judge['model']}"],
            [
                "win rate CI",
                f"{int(100 * meta['confidence'])}% percentile bootstrap, {meta['n_resamples']} "
                f"resamples, seed {meta['seed']}",
            ],
            *_length_control_settings(meta),
        ]
    elif judge:
        cfg = judge["config"]
        settings += [
            ["judge", _judge_line(judge)],
            ["preset", str(meta.get("preset") or "-")],
            ["judge template", judge["template_version"]],
            ["rubric template", str(judge.get("rubric_template_version") or "-")],
            [
                "orders",
                "both (preferences averaged)"
                if cfg["order"] == "both"
                else "one content-seeded random order per item, un-swapped",
            ],
            [
                "decoding",
                f"temperature {cfg['temperature']}, max_tokens {cfg['max_tokens']}, "
                f"logprobs {cfg['logprobs']}, JSON-schema constrained: {judge['structured_output']}",
            ],
            [
                "win rate CI",
                f"{int(100 * meta['confidence'])}% percentile bootstrap, {meta['n_resamples']} "
                f"resamples, seed {meta['seed']}",
            ],
            *_length_control_settings(meta),
        ]
    else:
        settings.append(["judge", "none: language fidelity only"])
    if meta.get("fidelity"):
        settings.append(["language identifier", json.dumps(meta["fidelity"], default=str)])
    md += ["## Settings", "", _markdown_table(["setting", "value"], settings), ""]
    md += ["## Results per language", ""]
    md += (
        ["![Win rate and language fidelity per language](win_rates.png)", ""]
        if with_plot
        else ["_No plot: matplotlib is not installed (`pip install 'xl-suite[plot]'`)._", ""]
    )
    cols = _columns(result)
    md.append(
        _markdown_table(
            [label for _, label in cols], [[_fmt(row.get(k)) for k, _ in cols] for row in result.table.values()]
        )
    )
    md += [
        "",
        "WR: mean P(model beats reference) x 100 (tie = 50); SE: standard error; CI: bootstrap interval; "
        "discrete: wins + half the ties; LC min: length-controlled win rate by alpaca_eval's "
        "length_controlled_minimal GLM (lc_minimal_winrate); LC v1: alpaca_eval's leaderboard estimator "
        "length_controlled_v1 (length_controlled_winrate; only for alpaca_eval's own judgments, see Settings); "
        "parsed %: judgments whose verdict "
        "could be read; prefer 1st: share of decided judgments won by the answer shown first (0.5 = no position "
        "bias); prefer longer: share won by the longer answer; fidelity: responses identified as the target "
        "language; line pass: responses whose every long line is in the target language.",
        "",
    ]
    md += _jury_section(result)
    if result.ledger:
        md += ["## Cost and token ledger", ""]
        keys = [
            "requests",
            "unique_requests",
            "judged_now",
            "from_cache",
            "rule_based",
            "json_repaired",
            "corrupt_cache_files",
            "prompt_tokens",
            "completion_tokens",
            "cached_prompt_tokens",
            "cached_completion_tokens",
            "seconds",
            "cost_usd",
        ]
        md.append(
            _markdown_table(
                ["stage", *keys],
                [
                    [stage, *[_fmt(entry.get(k), 4 if k == "cost_usd" else 1) for k in keys]]
                    for stage, entry in result.ledger.items()
                ],
            )
        )
        md += [
            "",
            "json_repaired: replies read only after the JSON repair step (counted as parsed). "
            "Tokens are those spent in this run; cached_* are the tokens once spent on the judgments read "
            "from the annotation cache. cost_usd needs prices in the preset.",
            "",
        ]
    if result.judged:
        bad = [r for r in result.judgments if r["parse_status"] == RowStatus.UNPARSED]
        md += ["## Unparsed judgments", ""]
        if bad:
            md += [
                f"{len(bad)} of {len(result.judgments)} judgments could not be parsed; they are left out of the "
                "win rates and counted above. First ones:",
                "",
            ]
            md.append(
                _markdown_table(
                    ["id", "language", "order", "raw completion"],
                    [[r["id"], r["language"], r["order"], repr(r["raw_completion"][:160])] for r in bad[:10]],
                )
            )
            md.append("")
        else:
            md += ["None: every judgment was parsed.", ""]
        rules = sum(is_rule(r["parse_status"]) for r in result.judgments)
        if rules:
            md += [f"{rules} judgment(s) of empty model answers were decided by rule (an empty answer loses).", ""]
    if meta.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += [
        "## Files",
        "",
        "- `leaderboard.csv`: the table above, one row per language and overall.",
        "- `per_sample.jsonl`: per item `p_model_wins` (P(model beats reference), 0-1), verdicts, rubric scores "
        "and detected language.",
        "- `judgments.jsonl` / `rubric.jsonl`: every judgment with its provenance and raw completion.",
        "- `summary.json`: table, ledger and settings.",
        "- `annotations.json` / `model_outputs.json`: the judgments and answers in alpaca_eval's own format "
        "(`preference` in [1, 2], `output_1` the reference, `output_2` the model), for alpaca_eval's tools.",
        "",
    ]
    return "\n".join(md)


#: Layout 1 names -> layout 2 names, per file (see :data:`xl_suite.evaluation.results.REPORT_LAYOUT`).
_LAYOUT_1_TABLE = {
    "length_controlled_win_rate": "lc_minimal_winrate",
    "lc_standard_error": "lc_minimal_standard_error",
}
_LAYOUT_1_ROWS = {"preference": "p_model_wins"}


@dataclass
class Report:
    """An evaluation report folder as :func:`read_report` reads it (always in the current layout).

    Attributes:
        path: the folder.
        table: language code and ``"overall"`` -> statistics (as :attr:`EvaluationResult.table`).
        meta: settings (model, judge, languages, ...).
        ledger: judge work, tokens and cost per stage.
        layout: the layout the files were written in (1: before ``p_model_wins``/``lc_minimal_winrate``).
    """

    path: Path
    table: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    ledger: dict[str, Any] = field(default_factory=dict)
    layout: int = REPORT_LAYOUT

    @property
    def model(self) -> str:
        """The evaluated model's name (the folder's name when the report has none)."""
        return self.meta.get("model") or self.path.name

    def per_sample(self) -> list[dict[str, Any]]:
        """``per_sample.jsonl``, with layout-1 names upgraded (``preference`` -> ``p_model_wins``)."""
        return self._rows("per_sample.jsonl")

    def judgments(self) -> list[dict[str, Any]]:
        """``judgments.jsonl`` (empty without a judge), with layout-1 names upgraded."""
        return self._rows("judgments.jsonl") if (self.path / "judgments.jsonl").is_file() else []

    def _rows(self, name: str) -> list[dict[str, Any]]:
        from xl_suite.evaluation.files import read_rows

        rows = read_rows(str(self.path / name))
        if self.layout < 2:
            rows = [{_LAYOUT_1_ROWS.get(k, k): v for k, v in r.items()} for r in rows]
        return rows


def read_report(path: str | Path) -> Report:
    """Read a report folder written by :func:`write_report` (this or an earlier layout).

    Layout 1 (reports written before ``meta.report_layout`` existed) named P(model wins) ``preference`` and our
    length-controlled estimator ``length_controlled_win_rate`` (``length_controlled_winrate`` in its CSV, alpaca_eval's
    name for another estimator): both are read under their current names, ``p_model_wins`` and
    ``lc_minimal_winrate``.

    Raises:
        InvalidArgumentError: the folder has no readable ``summary.json``.
    """
    folder = Path(path)
    summary = folder / "summary.json"
    if not summary.is_file():
        raise InvalidArgumentError(
            f"{str(folder)!r} is not an xl-suite report folder: it has no summary.json (write one with "
            "`xl-suite evaluate ... --output DIR`)."
        )
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        table, meta = data["table"], data["meta"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgumentError(
            f"{str(summary)!r} is not a report summary ({e}); rerun `xl-suite evaluate`."
        ) from e
    layout = int(meta.get("report_layout") or 1)
    if layout > REPORT_LAYOUT:
        raise InvalidArgumentError(
            f"{str(summary)!r} has report layout {layout}, newer than this xl-suite reads ({REPORT_LAYOUT}); "
            "upgrade xl-suite."
        )
    if layout < 2:
        table = {name: {_LAYOUT_1_TABLE.get(k, k): v for k, v in row.items()} for name, row in table.items()}
    table = {name: {k: (math.nan if v is None else v) for k, v in row.items()} for name, row in table.items()}
    return Report(path=folder, table=table, meta=meta, ledger=data.get("ledger") or {}, layout=layout)
