"""alpaca_eval's leaderboard length control (``length_controlled_v1``) beside ours (``lc_minimal_winrate``).

The v1 GLM needs alpaca_eval's ``df_gamed.csv`` (Hub dataset ``tatsu-lab/alpaca_eval``), which nothing here can
download: the tests use ``tests/data/alpaca_eval/df_gamed_sample.csv``, a small file in its format (30
instructions, the two gamed baselines), and a synthetic full-size one written in ``tmp_path``. The reference is
alpaca_eval's own implementation, run on the same data where ``alpaca_eval`` is installed (the ``tests`` extra).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from xl_suite.cli import main
from xl_suite.evaluation.alpaca_eval import (
    GAMED_FILENAME,
    GAMED_REPO_ID,
    GamedBaselinesUnavailable,
    add_length_controlled_v1,
    length_controlled_v1_reason,
    read_gamed_baselines,
)
from xl_suite.evaluation.metrics import GamedBaselines, length_controlled_v1_win_rate
from xl_suite.evaluation.report import read_report


DATA = Path(__file__).parents[1] / "data"
SAMPLE = DATA / "alpaca_eval" / "df_gamed_sample.csv"


def _annotations(n: int, seed: int) -> list[dict]:
    """alpaca_eval annotations of one model against gpt4_1106_preview on instructions 0..n-1 (soft preferences)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        len_1, len_2 = int(rng.integers(50, 900)), int(rng.integers(20, 1400))
        p = float(np.clip(1 / (1 + np.exp(-(len_2 - len_1) / 400)) + rng.normal(0, 0.15), 0.0, 1.0))
        rows.append(
            {
                "instruction": f"Instruction {i}",
                "output_1": "x" * len_1,
                "output_2": "y" * len_2,
                "generator_1": "gpt4_1106_preview",
                "generator_2": "some-model",
                "annotator": "weighted_alpaca_eval_gpt4_turbo",
                "preference": 1.0 + p,
            }
        )
    return rows


def _ours(annotations: list[dict], gamed: GamedBaselines) -> dict:
    return length_controlled_v1_win_rate(
        [a["preference"] - 1 for a in annotations],
        [len(a["output_2"]) for a in annotations],
        [len(a["output_1"]) for a in annotations],
        range(len(annotations)),
        gamed,
    )


def _alpaca_eval_v1(annotations: list[dict], gamed_path: Path, monkeypatch) -> float:
    """alpaca_eval's own length_controlled_winrate, with its df_gamed.csv download replaced by ``gamed_path``."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("alpaca_eval")
    sklearn = pytest.importorskip("sklearn")
    from alpaca_eval.metrics import glm_winrate

    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kwargs: str(gamed_path))
    # alpaca_eval turns on scikit-learn's metadata routing process-wide; the context puts it back.
    with sklearn.config_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's deprecation of alpaca_eval's penalty="l1"
        out = glm_winrate.get_length_controlled_winrate(pd.DataFrame(annotations), save_weights_dir=None)
    return float(out["length_controlled_winrate"])


def _write_gamed(path: Path, n: int, seed: int) -> Path:
    """A synthetic df_gamed.csv for AlpacaEval's n instructions (two gamed baselines, index 0..n-1 in order)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.9, 0.3, size=n)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"])
        for model, shift in (("gpt4_1106_preview_verbose", 1.0), ("gpt4_1106_preview_concise", -1.0)):
            for i in range(n):
                sdl = rng.normal(-shift, 0.7)
                p = 1 / (1 + np.exp(-(0.8 * difficulty[i] - 1.2 * np.tanh(sdl) - 0.5)))
                w.writerow([model, i, float(np.clip(p + rng.normal(0, 0.1), 0, 1)), sdl, difficulty[i], False])
    return path


def _hub_cache(root: Path, source: Path) -> Path:
    """A huggingface_hub cache holding ``source`` as df_gamed.csv of the dataset tatsu-lab/alpaca_eval."""
    repo = root / ("datasets--" + GAMED_REPO_ID.replace("/", "--"))
    sha = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / GAMED_FILENAME).write_bytes(source.read_bytes())
    return root


# ----------------------------------------------------------------------------------------------------------------
# the estimator


def test_v1_matches_alpaca_eval_on_the_sample_file(monkeypatch):
    annotations = _annotations(30, seed=1)
    gamed, _ = read_gamed_baselines(str(SAMPLE))

    ours = _ours(annotations, gamed)

    assert ours["length_controlled_winrate"] == pytest.approx(
        _alpaca_eval_v1(annotations, SAMPLE, monkeypatch), abs=1e-9
    )
    assert (ours["n_total"], ours["n_unparsed"], ours["n_gamed_rows"]) == (30, 0, 60)


@pytest.mark.data
@pytest.mark.parametrize("model", ["claude-2.1", "alpaca-7b"])
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_v1_matches_alpaca_eval_on_its_annotations(model, shared_data, tmp_path, monkeypatch):
    annotations = json.loads((shared_data / "alpaca_eval" / f"annotations_{model}.json").read_text("utf-8"))
    gamed_path = _write_gamed(tmp_path / GAMED_FILENAME, len(annotations), seed=7)
    gamed, _ = read_gamed_baselines(str(gamed_path))

    ours = _ours(annotations, gamed)["length_controlled_winrate"]

    # pandas' fast CSV float parser may differ from float() in the last bit; liblinear's stopping tolerance (1e-4)
    # turns that into a few 1e-5 points.
    assert ours == pytest.approx(_alpaca_eval_v1(annotations, gamed_path, monkeypatch), abs=1e-3)


def test_v1_is_the_mean_prediction_at_zero_length_difference():
    # Whatever the fit, the result is 100 * mean(sigmoid(gamma * difficulty_i + psi)) over the model's rows, the
    # difficulties read from the file by instruction index (the sample's first row of each index).
    annotations = _annotations(12, seed=3)
    gamed, _ = read_gamed_baselines(str(SAMPLE))
    out = _ours(annotations, gamed)
    with SAMPLE.open(encoding="utf-8") as f:
        difficulty = {}
        for row in csv.DictReader(f):
            difficulty.setdefault(int(row["index"]), float(row["instruction_difficulty"]))
    by_hand = [
        1 / (1 + math.exp(-(out["instruction_difficulty_coefficient"] * difficulty[i] + out["model_coefficient"])))
        for i in range(12)
    ]
    assert out["length_controlled_winrate"] == pytest.approx(100 * sum(by_hand) / 12, abs=1e-9)


def test_v1_predicts_unparsed_rows_too_and_fits_only_parsed_ones(monkeypatch):
    annotations = _annotations(30, seed=2)
    annotations[4]["preference"] = None
    gamed, _ = read_gamed_baselines(str(SAMPLE))
    ours = _ours([{**a, "preference": a["preference"] or math.nan} for a in annotations], gamed)
    assert (ours["n_total"], ours["n_unparsed"]) == (29, 1)
    reference = _alpaca_eval_v1(annotations, SAMPLE, monkeypatch)
    assert ours["length_controlled_winrate"] == pytest.approx(reference, abs=1e-9)


def test_v1_needs_a_difficulty_for_every_instruction():
    gamed, _ = read_gamed_baselines(str(SAMPLE))
    with pytest.raises(ValueError, match=r"instruction index 30 .*no instruction difficulty.*805 prompts"):
        length_controlled_v1_win_rate([0.5, 0.7], [10, 20], [15, 15], [0, 30], gamed)


# ----------------------------------------------------------------------------------------------------------------
# the file, through huggingface_hub's cache only


def test_gamed_file_is_read_from_the_hub_cache(tmp_path):
    cache = _hub_cache(tmp_path / "hub", SAMPLE)
    gamed, info = read_gamed_baselines(cache_dir=str(cache))
    assert info["path"].endswith(GAMED_FILENAME) and len(info["sha256"]) == 64
    assert gamed.index.tolist()[:3] == [0, 1, 2] and gamed.not_gamed_baseline.sum() == 0
    assert gamed.preference.size == 60


def test_gamed_file_not_cached_names_the_download(tmp_path):
    with pytest.raises(GamedBaselinesUnavailable, match=r"hf download tatsu-lab/alpaca_eval df_gamed.csv"):
        read_gamed_baselines(cache_dir=str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("std_delta_len", "delta_len"), r"lacks the column\(s\) \['std_delta_len'\]"),
        (lambda t: t.replace(",0.550733,", ",1.550733,"), r"line 2: preference 1.550733 is outside \[0, 1\]"),
        (lambda t: t.replace(",False\n", ",maybe\n", 1), r"line 2: cannot read"),
    ],
)
def test_gamed_file_errors_name_the_problem(tmp_path, edit, match):
    bad = tmp_path / "bad.csv"
    bad.write_text(edit(SAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_gamed_baselines(str(bad))


def test_v1_applies_only_to_alpaca_eval_own_annotations():
    row = {
        "annotator": "weighted_alpaca_eval_gpt4_turbo",
        "generator_1": "gpt4_1106_preview",
        "generator_2": "m",
        "alpaca_eval_index": 3,
        "language": "en",
    }
    assert length_controlled_v1_reason([row]) is None
    assert "not alpaca_eval's gpt4_1106_preview" in length_controlled_v1_reason([{**row, "generator_1": "gpt-4o"}])
    assert "more than one model" in length_controlled_v1_reason([row, {**row, "generator_2": "n"}])
    assert "no row is in English" in length_controlled_v1_reason([{**row, "language": "de"}])
    assert "not matched" in length_controlled_v1_reason([{**row, "alpaca_eval_index": None}])


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_add_v1_fills_only_english_and_overall_when_all_english():
    from xl_suite.evaluation import evaluate_responses

    annotations = _annotations(12, seed=5)
    rows = [{**a, "alpaca_eval_index": i, "language": "en"} for i, a in enumerate(annotations)]
    result = evaluate_responses(
        [a["output_2"] for a in annotations],
        "en",
        references=[a["output_1"] for a in annotations],
        preferences=[a["preference"] - 1 for a in annotations],
        annotator="weighted_alpaca_eval_gpt4_turbo",
        n_resamples=10,
    )
    assert "length_controlled_winrate" not in result.table["en"]
    assert result.meta["length_control"]["length_controlled_winrate"].startswith("not computed")

    add_length_controlled_v1(result, rows, gamed_path=str(SAMPLE))

    gamed, _ = read_gamed_baselines(str(SAMPLE))
    expected = _ours(annotations, gamed)["length_controlled_winrate"]
    assert result.table["en"]["length_controlled_winrate"] == pytest.approx(expected, abs=1e-12)
    assert result.table["overall"]["length_controlled_winrate"] == pytest.approx(expected, abs=1e-12)
    assert "length_controlled_v1" in result.meta["length_control"]["length_controlled_winrate"]
    assert result.table["en"]["lc_minimal_winrate"] != pytest.approx(expected)  # another estimator, another column


# ----------------------------------------------------------------------------------------------------------------
# end to end: alpaca_eval's annotations.json through `xl-suite evaluate`


def _evaluate(root: Path, model: str, report: Path) -> None:
    args = ["evaluate", "--model-outputs", str(root / f"annotations_{model}.json"), "--language", "en"]
    args += ["--alpaca-eval-source", str(root / "gpt-4o-mini-2024-07-18_outputs.json"), "--output", str(report)]
    assert main([*args, "--n-resamples", "20"]) == 0


@pytest.mark.data
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_report_without_df_gamed_has_no_column_under_the_boards_name(shared_data, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    root = shared_data / "alpaca_eval"
    _evaluate(root, "claude-2.1", tmp_path / "report")

    with open(tmp_path / "report" / "leaderboard.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "length_controlled_winrate" not in rows[0] and "lc_standard_error" not in rows[0]
    minimal = json.loads((root / "lc_minimal_dev.json").read_text("utf-8"))["claude-2.1"]
    # ours, on the 797 prompts XL-AlpacaEval keeps: within 1 point of alpaca_eval's minimal GLM on all 805
    assert float(rows[-1]["lc_minimal_winrate"]) == pytest.approx(minimal["length_controlled_win_rate_minimal"], abs=1)
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "`length_controlled_winrate` | not computed: df_gamed.csv of the Hub dataset" in md
    assert "`lc_minimal_winrate` | alpaca_eval's length_controlled_minimal GLM" in md


@pytest.mark.data
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_report_with_df_gamed_in_the_cache_has_alpaca_evals_v1(shared_data, tmp_path, monkeypatch):
    import huggingface_hub.constants

    root = shared_data / "alpaca_eval"
    gamed_path = _write_gamed(tmp_path / GAMED_FILENAME, 805, seed=11)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", gamed_path)))
    _evaluate(root, "claude-2.1", tmp_path / "report")

    report = read_report(tmp_path / "report")
    annotations = json.loads((root / "annotations_claude-2.1.json").read_text("utf-8"))
    unmatched = {u["index"] for u in report.meta["alpaca_eval"]["unmatched_sample"]}
    kept = [a for i, a in enumerate(annotations) if i not in unmatched]
    gamed, _ = read_gamed_baselines(str(gamed_path))
    expected = length_controlled_v1_win_rate(
        [a["preference"] - 1 for a in kept],
        [len(a["output_2"]) for a in kept],
        [len(a["output_1"]) for a in kept],
        [i for i in range(len(annotations)) if i not in unmatched],
        gamed,
    )["length_controlled_winrate"]
    assert report.table["en"]["length_controlled_winrate"] == pytest.approx(expected, abs=1e-9)
    assert report.table["overall"]["length_controlled_winrate"] == pytest.approx(expected, abs=1e-9)
    assert "sha256" in report.meta["length_control"]["length_controlled_winrate"]


# ----------------------------------------------------------------------------------------------------------------
# reports written before the rename still read


def test_layout_1_report_reads_under_the_new_names():
    old = DATA / "report_layout1"
    summary = json.loads((old / "summary.json").read_text(encoding="utf-8"))
    assert "report_layout" not in summary["meta"]  # written by xl-suite before the rename

    report = read_report(old)

    assert report.layout == 1 and report.model == "old-model"
    overall = report.table["overall"]
    assert overall["lc_minimal_winrate"] == summary["table"]["overall"]["length_controlled_win_rate"]
    assert overall["lc_minimal_standard_error"] == summary["table"]["overall"]["lc_standard_error"]
    assert "length_controlled_winrate" not in overall and "length_controlled_win_rate" not in overall
    samples = report.per_sample()
    assert "preference" not in samples[0] and samples[0]["p_model_wins"] == 1.0
    judgments = report.judgments()
    assert judgments and all("p_model_wins" in j and "preference" not in j for j in judgments)
