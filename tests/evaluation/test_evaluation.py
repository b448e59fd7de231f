"""Evaluation: answers/references/translation stages, per-language tables, reports, the generate/translate/evaluate
commands, with fake engines (the real engine runs in test_evaluation_engine.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from xl_suite.cli import main
from xl_suite.engines.base import SamplingConfig
from xl_suite.engines.fake import FakeGenerator
from xl_suite.evaluation import (
    OVERALL,
    align_references,
    english_prompts,
    evaluate_responses,
    generate_answers,
    generate_references,
    read_rows,
    translate_prompts,
    write_m_alpacaeval,
    write_report,
)
from xl_suite.evaluation.judging import DEFAULT_DIMENSIONS


GERMAN = [
    "Berlin ist die Hauptstadt von Deutschland und hat viele Museen, Parks und Theater.",
    "Zum Frühstück esse ich gerne Brot mit Butter und trinke einen heißen Kaffee.",
    "Der Rhein fließt durch mehrere Länder und mündet schließlich in die Nordsee.",
    "Sorry, I will answer in English because it is easier for me to explain this.",
]
MALTESE = [
    "Il-Belt Valletta hija l-kapitali ta' Malta u għandha ħafna knejjes sbieħ.",
    "Fis-sajf in-nies imorru l-baħar u jieklu l-ħobż biż-żejt u t-tadam.",
    "",
]


def judge_responder(messages, i, sampling):
    """Prefers the answer marked GOOD; returns garbage when asked about a BAD answer; scores rubric 4s."""
    text = messages[-1]["content"]
    if "Score the answer" in text:
        return json.dumps(dict.fromkeys(DEFAULT_DIMENSIONS, 4))
    a = text.split("# Answer A", 1)[1].split("# Answer B", 1)[0]
    b = text.split("# Answer B", 1)[1]
    if "BAD" in a or "BAD" in b:
        return "no idea"
    return '{"winner": "A"}' if "GOOD" in a else ('{"winner": "B"}' if "GOOD" in b else '{"winner": "tie"}')


def inputs():
    preds = [f"GOOD {t}" if k % 2 == 0 and t else t for k, t in enumerate(GERMAN + MALTESE)]
    preds[1] = "BAD " + preds[1]
    langs = ["de"] * 4 + ["mt"] * 3
    refs = [f"Reference answer {k} in some language." for k in range(7)]
    instr = [
        f"Question {k}? Please respond in {'German' if lang == 'de' else 'Maltese'}." for k, lang in enumerate(langs)
    ]
    return preds, langs, refs, instr


def test_fidelity_only_without_judge():
    preds, langs, _, _ = inputs()
    res = evaluate_responses(preds, langs)
    assert list(res.table) == ["de", "mt", OVERALL]
    assert not res.judged and res.judgments == [] and res.ledger == {}
    de = res.table["de"]
    assert de["n"] == 4 and de["language_fidelity"] == 75.0 and "win_rate" not in de
    assert res.table["mt"]["n_empty"] == 1
    assert [s["detected_language"] for s in res.per_sample[:4]] == ["de", "de", "de", "en"]


def test_judged_table_per_language():
    preds, langs, refs, instr = inputs()
    res = evaluate_responses(
        preds,
        langs,
        references=refs,
        instructions=instr,
        judge=FakeGenerator(judge_responder, model="judge"),
        model_name="m",
        lc_method="mle",
        n_resamples=200,
    )
    de, mt, overall = res.table["de"], res.table["mt"], res.table[OVERALL]
    # de: GOOD wins twice, BAD is unparsed (never dropped), the English answer ties.
    assert de["win_rate"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    assert de["n_unparsed"] == 1 and de["n_unparsed_judgments"] == 2 and de["n_judgments"] == 8
    assert de["parse_rate"] == 75.0
    assert de["ci_low"] <= de["win_rate"] <= de["ci_high"]
    # mt: GOOD wins, plain ties, the empty answer loses by rule.
    assert mt["win_rate"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert mt["n_judgments"] == 4 and mt["parse_rate"] == 100.0
    assert overall["n"] == 7 and overall["n_unparsed"] == 1
    assert overall["prefer_first_rate"] == 0.5  # content-based judge: no position bias
    assert overall["rubric_helpfulness"] == pytest.approx((6 * 4 + 1) / 7)  # empty answer scores 1 by rule
    assert res.ledger["pairwise_judge"]["judged_now"] == 12 and res.ledger["pairwise_judge"]["rule_based"] == 2
    assert res.per_sample[1]["p_model_wins"] is None and res.per_sample[1]["parse_status"] == ["unparsed"]
    assert res.meta["judge"]["model"] == "judge" and res.meta["judge"]["template_version"].startswith(
        "judge_pairwise@"
    )


def test_language_with_only_garbage_is_nan_and_reported(tmp_path):
    res = evaluate_responses(
        ["BAD a", "GOOD b"],
        ["de", "mt"],
        references=["r", "s"],
        instructions=["q", "p"],
        judge=FakeGenerator(judge_responder),
        lc_method="mle",
        n_resamples=50,
    )
    assert math.isnan(res.table["de"]["win_rate"]) and res.table["de"]["n_unparsed"] == 1
    assert res.table["mt"]["win_rate"] == 100.0
    assert any("de: no judgment could be parsed" in w for w in res.meta["warnings"])
    paths = write_report(res, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "2 of 4 judgments could not be parsed" in md and "'no idea'" in md


def test_multiple_references_average():
    res = evaluate_responses(
        ["GOOD x"],
        ["de"],
        references=[["plain", "GOOD too"]],
        instructions=["q"],
        judge=FakeGenerator(judge_responder),
        lc_method="mle",
        n_resamples=20,
    )
    assert res.per_sample[0]["p_model_wins"] == pytest.approx(0.75)  # beats one reference, ties the other
    assert len(res.judgments) == 4 and res.meta["multi_reference"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"languages": ["de"]}, "same length"),
        ({"references": ["r"]}, "same length"),
        ({"languages": ["de", "klingon"]}, "Unknown language 'klingon'"),
        ({"predictions": ["a", None]}, "must be a string"),
        ({"references": ["r", ""]}, "reference_outputs\\[1\\] is empty"),
        ({"instructions": None}, "needs references= and instructions="),
    ],
)
def test_bad_inputs(kwargs, match):
    args = {
        "predictions": ["a", "b"],
        "languages": ["de", "de"],
        "references": ["r", "s"],
        "instructions": ["q", "p"],
        "judge": FakeGenerator(judge_responder),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate_responses(args.pop("predictions"), args.pop("languages"), **args)


def test_report_files_and_png(tmp_path):
    preds, langs, refs, instr = inputs()
    res = evaluate_responses(
        preds,
        langs,
        references=refs,
        instructions=instr,
        judge=FakeGenerator(judge_responder),
        model_name="my-model",
        lc_method="mle",
        n_resamples=100,
    )
    paths = write_report(res, tmp_path / "report")
    for key in ("markdown", "csv", "png", "summary", "per_sample", "judgments", "rubric"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(paths["png"])
    assert image.shape[0] > 100 and image.shape[1] > 300
    with paths["csv"].open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["language"] for r in rows] == ["de", "mt", OVERALL]
    assert rows[0]["model"] == "my-model" and float(rows[1]["win_rate"]) == pytest.approx(50.0)
    md = paths["markdown"].read_text(encoding="utf-8")
    for needle in (
        "## Results per language",
        "win_rates.png",
        "## Cost and token ledger",
        "## Unparsed judgments",
        "reconstructs",
        "judge_pairwise@2+",
    ):
        assert needle in md
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["table"]["de"]["n_unparsed"] == 1
    assert len(paths["judgments"].read_text(encoding="utf-8").splitlines()) == 14
    assert "win rate" not in res.format_table() and "WR" in res.format_table()


def test_fidelity_only_report(tmp_path):
    res = evaluate_responses(GERMAN, "de")
    paths = write_report(res, tmp_path)
    assert "judgments" not in paths and paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "none: language fidelity only" in paths["markdown"].read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# generation stages


def benchmark(n=3):
    import datasets

    rows = [
        {
            "id": f"id{k}",
            "language": lang,
            "instruction": f"Question {k}? Please respond in {lang}.",
            "english_instruction": f"Question {k}?",
            "dataset": "x",
            "reference": None,
            "reference_generator": None,
            "alpaca_eval_index": k,
            "request_template": "t",
        }
        for lang in ("de", "mt")
        for k in range(n)
    ]
    return datasets.Dataset.from_list(rows)


def test_generate_answers_and_references_resume(tmp_path):
    ds = benchmark()
    gen = FakeGenerator(lambda m, i, s: "Antwort: " + m[-1]["content"][:10], model="m", revision="r1")
    sampling = SamplingConfig(max_tokens=16)
    out = generate_answers(ds, gen, sampling=sampling, work_dir=str(tmp_path), chunk_size=2)
    assert out.num_rows == 6 and gen.prompts_seen == 6
    row = out[0]
    assert row["output"] == "Antwort: Question 0" and row["generator"] == "m@r1" and row["revision"] == "r1"
    assert row["template_version"].startswith("answer@1+") and json.loads(row["sampling"])["max_tokens"] == 16
    assert {"id", "language", "instruction", "finish_reason", "prompt_tokens", "completion_tokens"} <= set(
        out.column_names
    )
    again = FakeGenerator(lambda m, i, s: "never", model="m", revision="r1")
    out2 = generate_answers(ds, again, sampling=sampling, work_dir=str(tmp_path), chunk_size=2)
    assert again.prompts_seen == 0 and out2["output"] == out["output"]

    refs = generate_references(ds, FakeGenerator(lambda m, i, s: "Ref", model="gpt-4o-mini-2024-07-18"))
    assert refs.column_names[: len(ds.column_names)] == ds.column_names or set(ds.column_names) <= set(
        refs.column_names
    )
    assert refs["reference"] == ["Ref"] * 6 and refs["reference_generator"][0] == "gpt-4o-mini-2024-07-18"
    assert json.loads(refs[0]["reference_provenance"])["template_version"].startswith("answer@")


def test_translate_writes_m_alpacaeval_loadable_files(tmp_path):
    import datasets

    prompts = datasets.Dataset.from_list(
        [{"id": f"xlae-{k}", "english_instruction": f"Write {k} lines.", "dataset": "x"} for k in range(3)]
    )
    gen = FakeGenerator(lambda m, i, s: "" if "Write 2" in m[-1]["content"] else " Ikteb linji. ", model="tr")
    out = translate_prompts(prompts, gen, "mt,de")
    assert list(out) == ["mt", "de"]
    mt = out["mt"]
    assert mt["instruction"][:2] == ["Ikteb linji.", "Ikteb linji."] and mt["translation_status"] == [
        "ok",
        "ok",
        "empty",
    ]
    assert mt[0]["translator"] == "tr" and mt[0]["template_version"].startswith("translate_instruction@2+")
    paths = write_m_alpacaeval(out, tmp_path / "m")
    with pytest.raises(FileExistsError):
        write_m_alpacaeval(out, tmp_path / "m")
    from xl_suite.datasets_api import load_xl_suite

    ds = load_xl_suite("m-alpacaeval-mt", split="test", source=str(tmp_path / "m"))
    # the empty (failed) translation is not written: it is no prompt
    assert ds.num_rows == 2 and ds[0]["id"] == "xlae-0" and ds[0]["translator"] == "tr" and "xlae-2" not in ds["id"]
    assert ds[0]["english_instruction"] == "Write 0 lines." and paths["de"].name == "de.jsonl"
    with pytest.raises(ValueError, match="query language"):
        translate_prompts(prompts, gen, ["en"])


def test_align_references_errors():
    model = [{"id": "1", "language": "de", "output": "a", "instruction": "q"}]
    with pytest.raises(ValueError, match="have no reference"):
        align_references(model, [{"id": "2", "language": "de", "reference": "r"}])
    with pytest.raises(ValueError, match="Duplicate model output"):
        align_references(model * 2, [{"id": "1", "language": "de", "reference": "r"}])
    with pytest.raises(ValueError, match="lacks \\['language'\\]"):
        align_references([{"id": "1", "output": "a"}], [])
    rows = align_references(model, [{"id": "1", "language": "german", "output": "alpaca-style reference"}])
    assert rows[0]["reference"] == "alpaca-style reference"


# --------------------------------------------------------------------------------------------------------------
# commands (in-process, fake engines)


ALPACA = [
    {
        "instruction": f"Explain topic number {k} briefly.",
        "output": f"Topic {k}.",
        "generator": "x",
        "dataset": "helpful_base",
    }
    for k in range(4)
]


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA), encoding="utf-8")
    return path


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_cli_generate_evaluate_translate(tmp_path, alpaca_file, capsys):
    common = [
        "--backend",
        "fake",
        "--config",
        "xl-alpacaeval-de,xl-alpacaeval-mt",
        "--source",
        str(alpaca_file),
        "--max-tokens",
        "32",
    ]
    assert main(["generate", "--model", "my-model", *common, "--output", str(tmp_path / "ans")]) == 0
    assert (
        main(["generate", "--model", "ref-model", *common, "--output", str(tmp_path / "refs"), "--as-reference"]) == 0
    )
    rows = read_rows(tmp_path / "ans")
    assert len(rows) == 8 and {"id", "language", "output", "instruction", "model", "template_version"} <= set(rows[0])
    refs = read_rows(tmp_path / "refs" / "xl-alpacaeval-mt.jsonl")
    assert refs[0]["reference"] and refs[0]["reference_generator"] == "ref-model"
    # existing outputs are not overwritten silently: another model into the folder is refused (the same resumes)
    assert main(["generate", "--model", "my-model", *common, "--output", str(tmp_path / "ans")]) == 0
    assert main(["generate", "--model", "other-model", *common, "--output", str(tmp_path / "ans")]) == 2
    assert main(["generate", "--model", "m", *common, "--output", str(tmp_path / "x"), "--push", "u/r"]) == 2

    report = tmp_path / "report"
    args = [
        "evaluate",
        "--model-outputs",
        str(tmp_path / "ans"),
        "--references",
        str(tmp_path / "refs"),
        "--judge-backend",
        "fake",
        "--judge-model",
        "judge",
        "--output",
        str(report),
        "--n-resamples",
        "50",
        "--lc-method",
        "mle",
    ]
    capsys.readouterr()
    assert main(args) == 3  # the fake judge's default reply is garbage: no verdict parsed is a failed run
    captured = capsys.readouterr()
    printed = captured.out
    assert "overall" in printed and "pairwise_judge: 16 judged now, 0 from cache" in printed
    assert "No pairwise judgment could be parsed (16 of 16 unparsed)" in captured.err
    for name in ("report.md", "leaderboard.csv", "win_rates.png", "judgments.jsonl"):
        assert (report / name).is_file()  # the report is written all the same
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    assert summary["meta"]["model"] == "my-model" and summary["meta"]["preset"] == "local-vllm v1"
    assert summary["table"]["overall"]["n_unparsed"] == 8  # all counted
    assert summary["ledger"]["model_outputs"]["requests"] == 8
    # a judge that answers (one reply parsed as both a verdict and rubric scores): the failures are judged again
    good = {"winner": "A", **dict.fromkeys(("helpfulness", "relevance", "accuracy", "fluency", "naturalness"), 4)}
    fixed = [*args, "--judge-engine-kwargs", json.dumps({"reply": json.dumps(good)})]
    assert main(fixed) == 0
    printed = capsys.readouterr().out
    assert "pairwise_judge: 16 judged now, 0 from cache" in printed and "rubric_judge: 8 judged now" in printed
    assert main(fixed) == 0
    assert "pairwise_judge: 0 judged now, 16 from cache" in capsys.readouterr().out

    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(tmp_path / "ans"),
                "--output",
                str(tmp_path / "fid"),
                "--languages",
                "mt",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "fidelity" in out and " de " not in out
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(tmp_path / "ans"),
                "--judge-model",
                "j",
                "--judge-backend",
                "fake",
                "--output",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )
    assert "pass --references" in capsys.readouterr().err

    assert (
        main(
            [
                "translate",
                "--model",
                "tr",
                "--backend",
                "fake",
                "--languages",
                "ga",
                "--source",
                str(alpaca_file),
                "--output",
                str(tmp_path / "m"),
                "--limit",
                "2",
            ]
        )
        == 0
    )
    from xl_suite.datasets_api import load_xl_suite

    # the fake translator writes English: the loader's language check would (rightly) refuse it
    assert (
        load_xl_suite("m-alpacaeval-ga", split="test", source=str(tmp_path / "m"), check_language=False).num_rows == 2
    )


def test_english_prompts_ids_match_benchmark(alpaca_file):
    from xl_suite.datasets_api import load_xl_suite

    en = english_prompts(str(alpaca_file))
    de = load_xl_suite("xl-alpacaeval-de", split="test", source=str(alpaca_file))
    assert en["id"] == de["id"] and en["english_instruction"] == de["english_instruction"]
    assert english_prompts(str(alpaca_file), limit=2).num_rows == 2


def test_generate_and_evaluate_help_mention_key_flags(capsys):
    for cmd, flags in (
        ("generate", ["--as-reference", "--push", "--config"]),
        ("evaluate", ["--model-outputs", "--judge-preset", "--order"]),
        ("translate", ["--languages", "--output"]),
    ):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert all(f in text for f in flags)


def test_read_rows_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        read_rows(tmp_path / "empty")


def test_outputs_stage_paths_are_stable(tmp_path):
    """The answer stage writes resumable chunks under work_dir/answers (one folder per stage)."""
    generate_answers(benchmark(1), FakeGenerator(), work_dir=str(tmp_path))
    assert [p.name for p in Path(tmp_path).iterdir() if not p.name.startswith(".")] == ["answers"]  # and the lock


class MarksTruncated(FakeGenerator):
    """A fake that reports each prompt containing ``marker`` as truncated to its context, as the vLLM backend does
    under ``truncate_prompts`` (the prompt itself is left whole, so the judge responder can still read it)."""

    def __init__(self, *args, marker: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = marker
        self.truncate_prompts = True

    def _generate(self, conversations, sampling):
        out = super()._generate(conversations, sampling)
        for conv, cands in zip(conversations, out, strict=True):
            if self.marker in conv[-1]["content"]:
                for c in cands:
                    c.extra["prompt_truncated"] = True
        return out


def test_an_overlong_prompt_fails_its_row_or_is_truncated_kept_and_marked():
    ds = benchmark(2).map(lambda r, i: {"instruction": r["instruction"] + " word" * 200 * (i == 1)}, with_indices=True)
    sampling = SamplingConfig(max_tokens=8)
    failing = generate_answers(ds, FakeGenerator(context_tokens=108), sampling=sampling)
    assert failing["output_status"] == ["ok", "too_long", "ok", "ok"] and failing["output"][1] == ""
    kept = generate_answers(ds, FakeGenerator(context_tokens=108, truncate_prompts=True), sampling=sampling)
    assert kept["output_status"] == ["ok", "prompt_truncated", "ok", "ok"] and kept["output"][1]
    assert kept["prompt_tokens"][1] == 100  # the fake's last context_tokens - max_tokens words
    refs = generate_references(ds, MarksTruncated(marker="word word", model="r"), sampling=sampling)
    assert refs["reference_status"] == ["ok", "prompt_truncated", "ok", "ok"] and all(refs["reference"])


def test_judgments_and_translations_from_truncated_prompts_are_kept_and_counted(alpaca_file):
    res = evaluate_responses(
        ["GOOD x", "GOOD y"],
        ["de", "de"],
        references=["r", "s"],
        instructions=["q", "p"],
        judge=MarksTruncated(judge_responder, marker="GOOD x", model="judge"),
        lc_method="mle",
        n_resamples=20,
    )
    pairwise = [r for r in res.judgments if r["item_index"] == 0]
    assert [r["parse_status"] for r in pairwise] == ["prompt_truncated"] * 2
    de = res.table["de"]
    assert de["win_rate"] == 100.0 and de["n_unparsed_judgments"] == 0 and de["parse_rate"] == 100.0
    assert res.ledger["pairwise_judge"]["prompt_truncated"] == 2
    assert res.ledger["pairwise_judge"]["judge_truncate_prompts"] is True

    prompts = english_prompts(str(alpaca_file), limit=2)
    marker = prompts["english_instruction"][0]
    out = translate_prompts(prompts, MarksTruncated(lambda m, i, s: "Hallo", marker=marker), "de")["de"]
    assert out["translation_status"] == ["prompt_truncated", "ok"] and out["instruction"] == ["Hallo"] * 2


def test_cli_truncate_prompts_reaches_the_engine_and_marks_the_rows(tmp_path, alpaca_file, capsys):
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de"]
    argv += ["--source", str(alpaca_file), "--max-tokens", "8", "--engine-kwargs", '{"context_tokens": 12}']
    assert main([*argv, "--output", str(tmp_path / "long"), "--max-error-rate", "1"]) == 0
    # every prompt too long: failed rows, stored for the retry and counted, never written as answers
    assert (tmp_path / "long" / "xl-alpacaeval-de.jsonl").read_text() == ""
    assert "xl-alpacaeval-de: 4 of 4 answers failed (100.0%: too_long 4)" in capsys.readouterr().out
    assert main([*argv, "--output", str(tmp_path / "cut"), "--truncate-prompts"]) == 0
    rows = read_rows(tmp_path / "cut")
    assert {r["output_status"] for r in rows} == {"prompt_truncated"} and all(r["output"] for r in rows)
    assert f"{len(rows)} answers were generated from a prompt truncated" in capsys.readouterr().out


def _echo_system(messages, index, sampling):
    return messages[0]["content"][-200:]  # the part of the system prompt that names the language


def test_translate_uses_the_new_definition_not_its_cache(gsw, tmp_path):
    import datasets

    from xl_suite.evaluation import translate_prompts

    prompts = datasets.Dataset.from_list([{"id": "a", "english_instruction": "Write a line."}])
    first = translate_prompts(prompts, FakeGenerator(_echo_system), "gsw", work_dir=str(tmp_path))
    assert "Schwiizertüütsch" in first["gsw"]["instruction"][0]
    gsw(native="Schwyzerdütsch")
    again = translate_prompts(prompts, FakeGenerator(_echo_system), "gsw", work_dir=str(tmp_path))
    assert "Schwyzerdütsch" in again["gsw"]["instruction"][0]
    # a built-in language keeps its cache keys (no definition enters them)
    de = translate_prompts(prompts, FakeGenerator(_echo_system), "de", work_dir=str(tmp_path))
    assert de["de"]["translation_status"] == ["ok"]


# -- evaluate's inputs checked before any judge (issue 20) -----------------------------------------------------

_FEW = [{"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}."} for k in range(6)]


def _answers(tmp_path, capsys, *extra, out="ans"):
    src = tmp_path / "alpaca_eval.json"
    src.write_text(json.dumps(_FEW), encoding="utf-8")
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", str(src)]
    assert main([*argv, "--output", str(tmp_path / out), *extra]) == 0
    capsys.readouterr()
    return tmp_path / out


@pytest.mark.parametrize(
    ("name", "text"), [("p.json", "{bad json"), ("p.yaml", "judge_model: [1, 2\n"), ("q.yaml", "- a\n")]
)
def test_a_malformed_preset_file_is_one_line(tmp_path, capsys, name, text):
    ans, refs = _answers(tmp_path, capsys), _answers(tmp_path, capsys, "--as-reference", out="refs")
    preset = tmp_path / name
    preset.write_text(text)
    argv = ["evaluate", "--model-outputs", str(ans), "--references", str(refs), "--judge-preset", str(preset)]
    rc = main([*argv, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and f"Preset file {str(preset)!r}" in err and "Traceback" not in err


def test_an_answers_file_without_output_is_an_error_not_a_zero_report(tmp_path, capsys):
    """Old code: a 0 % fidelity report and exit 0."""
    rows = [json.loads(x) for x in (_answers(tmp_path, capsys) / "xl-alpacaeval-de.jsonl").read_text().splitlines()]
    bad = tmp_path / "no_output.jsonl"
    bad.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "output"}) + "\n" for r in rows))
    rc = main(["evaluate", "--model-outputs", str(bad), "--output", str(tmp_path / "r")])
    assert rc == 2 and "6 of 6 rows have no 'output' column" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_english_references_for_a_target_language_are_warned_about(tmp_path, capsys):
    """Old code: alpaca_eval's English outputs were accepted as --language de references without a word."""
    ans = _answers(tmp_path, capsys)
    refs = tmp_path / "refs.json"
    refs.write_text(
        json.dumps(
            [{**r, "output": f"This is a long English reference answer about topic {k}."} for k, r in enumerate(_FEW)]
        )
    )
    argv = ["evaluate", "--model-outputs", str(ans), "--references", str(refs), "--language", "de"]
    argv += ["--alpaca-eval-source", str(tmp_path / "alpaca_eval.json"), "--judge-backend", "fake", "--no-rubric"]
    argv += ["--judge-model", "j", "--judge-engine-kwargs", json.dumps({"reply": json.dumps({"winner": "A"})})]
    rc = main([*argv, "--n-resamples", "10", "--output", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "warning: the references for de are mostly not in German (language fidelity 0%; identified: en 6)" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert any("references for de are mostly not in German" in w for w in summary["meta"]["warnings"])
