"""Training data safe to train on: benchmark decontamination, MinHash near-duplicates, JSON-repaired score counts."""

from __future__ import annotations

import json

import datasets
import pytest
from test_synthesis import FakeSynthesisResponder, small_config, stage_of, stage_report

from xl_suite.engines.fake import FakeGenerator
from xl_suite.synthesis import default_stages, stage_fingerprint, synthesize
from xl_suite.synthesis.decontamination import (
    NearDuplicateIndex,
    contamination,
    decontaminate_batch,
    resolve_benchmark,
    tokens,
)
from xl_suite.synthesis.report import format_summary


PASSAGES = [
    "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the flour.",
    "The Danube flows through ten countries before it reaches the Black Sea in Romania.",
    "Honeybees communicate the direction of flowers to each other with a waggle dance.",
    "A good night's sleep helps the brain store what was learned during the day.",
]


def _alpaca_prompts(path, k: int = 3) -> list[str]:
    records = json.loads(path.read_text(encoding="utf-8"))
    long = [r["instruction"] for r in records if len(r["instruction"].split()) >= 12]
    return long[:k]


def _run(tmp_path, name, instructions: dict[int, str], responses: dict[int, str] | None = None, **config):
    """Synthesize PASSAGES with the fake engine, the backtranslated instruction (and the English answer) of some
    passages replaced by the given texts."""
    responses = responses or {}

    def responder(messages, i, sampling):
        stage = stage_of(messages)
        user = messages[-1]["content"]
        for k, passage in enumerate(PASSAGES):
            if passage in user:
                if stage == "backtranslate" and k in instructions:
                    return instructions[k]
                if stage == "refine" and k in responses:
                    return responses[k]
        return FakeSynthesisResponder()(messages, i, sampling)

    data = datasets.Dataset.from_dict({"text": PASSAGES})
    return synthesize(
        data, FakeGenerator(responder), small_config(languages=("mt",), **config), output=str(tmp_path / name)
    )


# -- the rule --------------------------------------------------------------------------------------------------


def test_tokens_and_short_prompt_rule():
    assert tokens("日本語のテキスト") == ["日", "本", "語", "の", "テ", "キ", "ス", "ト"]
    prompts = ["Write a haiku about autumn leaves", "hi there"]  # 6 tokens (< 8: whole prompt), 2 (too short)
    assert contamination("Please write a haiku about autumn leaves for me.", prompts) == (0, 1.0)
    assert contamination("Write a haiku about winter leaves.", prompts) == (-1, 0.0)  # not contiguous
    assert contamination("hi there, how are you?", prompts) == (-1, 0.0)  # too short to be used
    long = "Explain the difference between a comet and an asteroid and where each of them usually comes from"
    half = "the difference between a comet and an asteroid and where"  # 10 tokens: 3 of the prompt's 10 8-grams
    assert contamination(half, [long])[0] == -1
    most = "explain the difference between a comet and an asteroid and where each of them"  # 7 of 10
    assert contamination(most, [long]) == (0, 0.7)
    assert contamination(most, [long], threshold=0.75)[0] == -1


def test_batch_function_checks_lists_and_the_switch():
    prompts, ids = ["Name three famous painters of the Dutch golden age please"], ["p1"]
    batch = {"response": ["Nothing to see.", "I will name three famous painters of the Dutch golden age please!"]}
    out = decontaminate_batch(batch, columns=["response"], prompts=prompts, prompt_ids=ids)
    assert out["contamination_status"] == ["ok", "contaminated_response"] and out["decontaminated"] == [True, False]
    cands = {"candidates": [["a", "name three famous painters of the dutch golden age please"]]}
    assert decontaminate_batch(cands, columns=["candidates"], prompts=prompts, prompt_ids=ids)[
        "contamination_match"
    ] == ["p1"]
    off = decontaminate_batch(batch, columns=["response"], prompts=prompts, prompt_ids=ids, enabled=False)
    assert off["decontaminated"] == [True, True] and off["contamination_status"][1] == "contaminated_response"


def test_bad_benchmark_source_is_an_error_naming_it(tmp_path):
    from xl_suite.errors import SourceError

    with pytest.raises(SourceError, match="--decontaminate-against.*no-such.json"):
        resolve_benchmark([str(tmp_path / "no-such.json")])


def test_near_duplicate_index_any_script():
    idx = NearDuplicateIndex(0.8)
    text = (
        "To keep sourdough starter healthy, feed it every day with equal weights of flour and water, keep it "
        "at room temperature, and discard half of it before each feeding so that it stays active. A starter that "
        "smells of acetone is hungry: feed it twice a day for a while and it will recover within a week."
    )
    assert idx.add("de", ["Q1", text])
    # a paraphrase with a few words changed
    assert not idx.add("de", ["Q2", text.replace("every day", "each day").replace("keep it at", "store it at")])
    assert idx.add("mt", ["Q2", text])  # per language
    assert idx.add("de", ["Q3", "An unrelated answer about the planets of the solar system and their moons."])
    zh = "为了保持酸面团酵头健康，每天用等量的面粉和水喂养它，把它放在室温下，并在每次喂养前丢掉一半。"
    assert idx.add("zh", ["Q1", zh])
    assert not idx.add("zh", ["Q9", zh.replace("每天", "每日")])
    assert idx.add("zh", ["Q3", "太阳系有八大行星，其中木星是最大的一颗，拥有许多卫星。"])
    with pytest.raises(ValueError, match="threshold must be in"):
        NearDuplicateIndex(0)


# -- the pipeline, with real AlpacaEval prompts ----------------------------------------------------------------


@pytest.mark.slow  # synthesis decontaminated against AlpacaEval's 805 prompts (about 2 s of CPU)
@pytest.mark.data
def test_pairs_copying_alpaca_eval_are_dropped_and_counted(alpaca_eval_path, tmp_path):
    copied, in_answer, _ = _alpaca_prompts(alpaca_eval_path)
    instructions = {0: copied, 1: f"Quick question. {in_answer.lower()} Thanks!"}
    res = _run(tmp_path, "a", instructions, decontaminate_against=(str(alpaca_eval_path),))
    s = res.summary
    stage = stage_report(s, "decontaminate")
    assert stage["status"] == {"contaminated_instruction": 2, "ok": 2} and stage["dropped"] == 2
    assert s["decontamination"]["dropped"] == 2 and s["decontamination"]["prompts"] == 805 + 24  # + the sample
    assert s["decontamination"]["sources"] == [str(alpaca_eval_path), "builtin-sample"]
    assert s["decontamination"]["note"] is None
    final = res.dataset("mt")
    assert final.num_rows == 2 and copied not in final["instruction"]
    assert "decontamination: 2 pairs dropped (829 benchmark prompts)" in format_summary(s)
    # an English answer that quotes a benchmark prompt
    res = _run(
        tmp_path,
        "b",
        {},
        {2: "Here is a clear answer. People often ask: " + in_answer},
        decontaminate_against=(str(alpaca_eval_path),),
    )
    assert stage_report(res.summary, "decontaminate")["status"].get("contaminated_response_en") == 1
    assert res.dataset("mt").num_rows == 3
    # the same run without decontamination keeps the copied prompt: the check above is what removes it
    res = _run(tmp_path, "c", instructions, decontaminate=False)
    assert copied in res.dataset("mt")["instruction"] and res.dataset("mt").num_rows == 4
    assert "decontaminate" not in [st["stage"] for st in res.summary["stages"]]
    assert res.summary["decontamination"]["enabled"] is False
    assert any("decontamination is off" in w for w in res.summary["warnings"])
    assert "decontamination: OFF" in format_summary(res.summary)


def test_offline_default_uses_the_builtin_sample_and_says_so(tmp_path):
    from xl_suite.synthesis.decontamination import builtin_benchmark_path

    sample = json.loads(open(builtin_benchmark_path(), encoding="utf-8").readline())["instruction"]
    res = _run(tmp_path, "a", {3: sample})
    d = res.summary["decontamination"]
    assert d["sources"] == ["builtin-sample"] and d["prompts"] == 24 and d["dropped"] == 1
    assert any(
        "could not be read from the Hub" in w and "--decontaminate-against" in w for w in res.summary["warnings"]
    )


def test_near_duplicate_instructions_removed_in_the_final_step(tmp_path):
    base = (
        "Could you explain in detail why sourdough bread rises, which microorganisms are involved in the "
        "fermentation of the flour, how long the dough usually needs to rest before baking, and what changes "
        "when the kitchen is cold in winter?"
    )
    para = base.replace("in detail", "in depth").replace("usually needs", "typically needs")
    res = _run(tmp_path, "a", {0: base, 1: para}, decontaminate=False)
    assert res.summary["final"]["near_duplicates_removed"] == 1 and res.summary["final"]["duplicates_removed"] == 0
    assert res.dataset("mt").num_rows == 3 and para not in res.dataset("mt")["instruction"]
    assert "1 near-duplicates removed" in format_summary(res.summary)
    res = _run(tmp_path, "b", {0: base, 1: para}, decontaminate=False, near_dedup=False)
    assert res.summary["final"]["near_duplicates_removed"] == 0 and res.dataset("mt").num_rows == 4


def test_decontamination_fingerprint_follows_the_benchmark(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": "Write a poem about the sea and the sailors"}]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"instruction": "Write a poem about the mountains and the goats"}]))

    def fp(path, **kw):
        config = small_config(decontaminate_against=(str(path),), **kw)
        stage = next(s for s in default_stages(config) if s.name == "decontaminate")
        return stage_fingerprint(stage)

    assert fp(a) == fp(a) != fp(b)
    assert fp(a) != fp(a, decontamination_ngram=13) != fp(a, decontamination_threshold=0.8)


def test_cli_flags(tmp_path, capsys):
    from xl_suite.cli import main

    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"instruction": "Tell me about the history of the Danube river please"}) + "\n")
    out = tmp_path / "out"
    argv = ["synthesize", "--backend", "fake", "--model", "f", "--languages", "mt", "--max-seeds", "4"]
    argv += ["--output", str(out), "--no-progress", "--decontaminate-against", str(bench)]
    argv += ["--near-dedup-threshold", "0.9"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "decontaminate" in printed and "near-duplicates removed" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["decontamination"]["sources"] == [str(bench), "builtin-sample"]
        and summary["config"]["near_dedup_threshold"] == 0.9
    )


# -- JSON-repaired score replies -------------------------------------------------------------------------------


def test_score_and_judge_count_json_repaired_replies(tmp_path):
    def responder(messages, i, sampling):
        text = FakeSynthesisResponder()(messages, i, sampling)
        if stage_of(messages) in ("score", "judge"):
            return text.rstrip("}") + ","  # truncated object with a trailing comma: readable after repair
        return text

    data = datasets.Dataset.from_dict({"text": PASSAGES})
    res = synthesize(
        data, FakeGenerator(responder), small_config(languages=("mt",), n_candidates=2), output=str(tmp_path)
    )
    s = res.summary
    assert stage_report(s, "score")["json_repaired"] == 4 and stage_report(s, "score")["parse_rate"] == 1.0
    assert stage_report(s, "judge")["json_repaired"] == 8
    assert s["json_repaired"] == 12
    assert res.dataset("mt").num_rows == 4 and all(res.dataset("mt")["score_repaired"])
    table = format_summary(s).splitlines()
    assert "repaired" in table[0] and table[[r.split()[0] for r in table].index("score")].split()[5] == "4"
