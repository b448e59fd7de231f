"""The XL-AlpacaEval judge for TRL: the pairwise-judge protocol and the reward function, with the fake engine, and
the reward function inside TRL's real GRPOTrainer on the tiny model."""

from __future__ import annotations

import inspect
import math
import re

import pytest

from xl_suite.engines.fake import FakeGenerator
from xl_suite.errors import InvalidArgumentError
from xl_suite.training.judge import XlAlpacaEvalPairwiseJudge, XlAlpacaEvalRewardFunc, trl_pairwise_judge_base


_ANSWERS = re.compile(r"# Answer A\n\n(.*?)\n\n# Answer B\n\n(.*?)\n\n# Your verdict", re.DOTALL)


def prefer_longer(messages, index, sampling):
    """A position-consistent judge: the longer answer wins, equal lengths tie."""
    a, b = _ANSWERS.search(messages[-1]["content"]).groups()
    return '{"winner": "%s"}' % ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


PROMPTS = ["Wie spät ist es?", "Nenne einen Fluss."]
LONG, SHORT = "Es ist genau drei Uhr am Nachmittag.", "Drei."


def test_pairwise_judge_returns_trl_indices_and_soft_scores():
    engine = FakeGenerator(prefer_longer)
    judge = XlAlpacaEvalPairwiseJudge(engine, language="de")
    assert judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]]) == [0, 1]
    assert judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]], return_scores=True) == [1.0, 0.0]
    # order="both": each pair is judged in both orders; without a cache_dir the second call judges again
    assert engine.prompts_seen == 8
    assert judge.last_ledger["requests"] == 4 and judge.last_ledger["unparsed_items"] == 0


def test_the_judge_prompt_names_the_target_language_per_prompt():
    seen = []

    def record(messages, index, sampling):
        seen.append(messages[-1]["content"])
        return '{"winner": "A"}'

    languages = {"Wie spät ist es?": "de", "X'ħin hu?": "mt"}
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(record), language=languages)
    judge.judge(list(languages), [[LONG, SHORT], [LONG, SHORT]])
    assert sum("written in German" in s for s in seen) == 2 and sum("written in Maltese" in s for s in seen) == 2
    with pytest.raises(InvalidArgumentError, match="No target language for the prompt 'Hello'"):
        judge.judge(["Hello"], [[LONG, SHORT]])
    with pytest.raises(ValueError, match="xx"):
        XlAlpacaEvalPairwiseJudge(FakeGenerator(record), language="xx")


def test_unparseable_verdicts_are_minus_one_or_nan_never_a_guess():
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(lambda m, i, s: "I cannot decide."), language="de")
    assert judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]]) == [-1, -1]
    scores = judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]], return_scores=True)
    assert all(math.isnan(s) for s in scores)
    assert judge.last_ledger["unparsed_items"] == 2


@pytest.mark.parametrize(("tie_break", "expected"), [("first", 0), ("second", 1), ("invalid", -1)])
def test_tie_break(tie_break, expected):
    judge = XlAlpacaEvalPairwiseJudge(
        FakeGenerator(lambda m, i, s: '{"winner": "tie"}'), language="de", tie_break=tie_break
    )
    assert judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]]) == [expected, expected]
    assert judge.judge(PROMPTS, [[LONG, SHORT]] * 2, return_scores=True) == [0.5, 0.5]


def test_random_tie_break_is_content_seeded_and_uses_both_indices():
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(lambda m, i, s: '{"winner": "tie"}'), language="de")
    prompts = [f"Frage {i}?" for i in range(16)]
    pairs = [[LONG, SHORT]] * 16
    first = judge.judge(prompts, pairs)
    assert first == judge.judge(prompts, pairs)  # reproducible
    assert set(first) == {0, 1}  # no position preference
    with pytest.raises(InvalidArgumentError, match="tie_break='coin'"):
        XlAlpacaEvalPairwiseJudge(FakeGenerator(), language="de", tie_break="coin")


def test_position_bias_averages_to_a_tie():
    """A judge that always says A prefers each answer once: both orders averaged give 0.5, not a win."""
    judge = XlAlpacaEvalPairwiseJudge(
        FakeGenerator(lambda m, i, s: '{"winner": "A"}'), language="de", tie_break="invalid"
    )
    assert judge.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]], return_scores=True) == [0.5, 0.5]


def test_conversational_prompts_and_completions_and_empty_answers():
    engine = FakeGenerator(prefer_longer)
    judge = XlAlpacaEvalPairwiseJudge(engine, language="de")
    prompt = [{"role": "system", "content": "Sei hilfreich."}, {"role": "user", "content": "Wie spät ist es?"}]
    pair = [[{"role": "assistant", "content": SHORT}], [{"role": "assistant", "content": LONG}]]
    assert judge.judge([prompt], [pair]) == [1]
    before = engine.prompts_seen
    assert judge.judge(PROMPTS, [[LONG, ""], ["", ""]], return_scores=True) == [1.0, 0.5]  # by rule, no judge call
    assert engine.prompts_seen == before


def test_bad_calls_name_the_problem():
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(prefer_longer), language="de")
    with pytest.raises(InvalidArgumentError, match="2 prompts but 1 completion pairs"):
        judge.judge(PROMPTS, [[LONG, SHORT]])
    with pytest.raises(InvalidArgumentError, match=r"completions\[0\] must be a pair"):
        judge.judge(PROMPTS[:1], [[LONG, SHORT, SHORT]])
    from xl_suite.evaluation.judging import JudgeConfig

    random_order = XlAlpacaEvalPairwiseJudge(
        FakeGenerator(prefer_longer), language="de", config=JudgeConfig(order="random", rubric=False)
    )
    assert random_order.judge(PROMPTS, [[LONG, SHORT], [SHORT, LONG]]) == [0, 1]
    with pytest.raises(InvalidArgumentError, match="shuffle_order=False"):
        random_order.judge(PROMPTS, [[LONG, SHORT]] * 2, shuffle_order=False)
    with pytest.raises(InvalidArgumentError, match="engine must be an xl_suite Generator"):
        XlAlpacaEvalPairwiseJudge("gpt-4o", language="de")


def test_engine_spec_starts_only_when_judging():
    from xl_suite.engines.spec import EngineSpec

    judge = XlAlpacaEvalPairwiseJudge(EngineSpec(model="fake-judge", backend="fake"), language="de")
    assert judge.engine._engine is None
    assert judge.judge(PROMPTS[:1], [[LONG, SHORT]]) == [-1]  # the default fake echoes the prompt: no verdict
    assert judge.engine._engine is not None


# TRL's pairwise-judge protocol, as its last release with judges defined it (trl.experimental.judges.judges,
# BasePairwiseJudge.judge and PairRMJudge.judge) and as WinRateCallback called it.
TRL_JUDGE_PARAMETERS = [
    ("prompts", inspect.Parameter.empty),
    ("completions", inspect.Parameter.empty),
    ("shuffle_order", True),
]


def test_matches_trls_pairwise_judge_protocol():
    trl = pytest.importorskip("trl")
    params = list(inspect.signature(XlAlpacaEvalPairwiseJudge.judge).parameters.values())[1:]
    assert [(p.name, p.default) for p in params[:3]] == TRL_JUDGE_PARAMETERS
    assert params[3].name == "return_scores" and params[3].default is False
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(prefer_longer), language="de")
    ref_completions, model_completions = [SHORT, LONG], [LONG, SHORT]
    completions = list(zip(ref_completions, model_completions, strict=True))
    # WinRateCallback.on_evaluate: hard and soft (use_soft_judge=True) calls, shuffle_order positional
    winner_indices = judge.judge(PROMPTS, completions, True)
    assert sum(i == 1 for i in winner_indices) / len(winner_indices) == 0.5
    ref_win_probs = judge.judge(PROMPTS, completions, True, return_scores=True)
    assert 1 - sum(ref_win_probs) / len(ref_win_probs) == 0.5
    base = trl_pairwise_judge_base()
    if base is not None:  # TRL < 1.0: a (virtual) subclass of TRL's own base class
        assert isinstance(judge, base)
    else:  # TRL >= 1.0 removed its judges; the online trainers take reward functions (tested below)
        assert int(trl.__version__.split(".")[0]) >= 1


def test_reward_function_uses_dataset_columns():
    reward = XlAlpacaEvalRewardFunc(FakeGenerator(prefer_longer))
    assert reward.__name__ == "xl_alpacaeval_judge"
    out = reward(
        prompts=PROMPTS, completions=[LONG, SHORT], reference=[SHORT, LONG], language=["de", "de"], trainer_state=None
    )
    assert out == [1.0, 0.0]
    with pytest.raises(InvalidArgumentError, match=r"no 'reference' column .* \['language'\]"):
        reward(prompts=PROMPTS, completions=[LONG, SHORT], language=["de", "de"])
    with pytest.raises(InvalidArgumentError, match="no 'language' column"):
        reward(prompts=PROMPTS, completions=[LONG, SHORT], reference=[SHORT, LONG])
    unparsed = XlAlpacaEvalRewardFunc(FakeGenerator(lambda m, i, s: "hmm"), language="de")
    assert unparsed(prompts=PROMPTS, completions=[LONG, SHORT], reference=[SHORT, LONG]) == [None, None]


@pytest.mark.slow
def test_reward_function_in_trls_grpo_trainer(tiny_model_dir, tmp_path):
    """TRL's current online trainer API: the judge as ``reward_funcs`` of a real GRPOTrainer, two steps on CPU."""
    import datasets

    pytest.importorskip("trl")
    from trl import GRPOConfig, GRPOTrainer

    calls = []

    def judge_reply(messages, index, sampling):
        calls.append(messages[-1]["content"])
        return prefer_longer(messages, index, sampling)

    reward = XlAlpacaEvalRewardFunc(FakeGenerator(judge_reply))
    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Frage {i}? Please respond in German."}],
                "reference": "Ja.",
                "language": "de",
            }
            for i in range(4)
        ]
    )
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=reward, args=args, train_dataset=ds)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/xl_alpacaeval_judge/mean" in h]
    assert len(logged) == 2
    assert all(0.0 <= h["rewards/xl_alpacaeval_judge/mean"] <= 1.0 for h in logged)
    assert calls and all("written in German" in c and "\n\nJa.\n\n" in c for c in calls)


@pytest.mark.slow
def test_metric_callback_logs_fidelity_and_judge_win_rate(tiny_model_dir):
    """XlMetricCallback on its own: answers with the model, scores with the evaluate metric, logs through trainer.log."""
    from types import SimpleNamespace

    pytest.importorskip("evaluate")
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from xl_suite import XlMetricCallback

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.train()
    logged = []
    trainer = SimpleNamespace(
        model=model, processing_class=AutoTokenizer.from_pretrained(str(tiny_model_dir)), log=logged.append
    )
    prompts = ["Name a river. Please respond in German.", "Name a city. Please respond in Maltese."]
    callback = XlMetricCallback(
        trainer,
        prompts,
        ["de", "mt"],
        max_new_tokens=8,
        min_new_tokens=4,
        references=["Der Rhein.", "Il-Belt Valletta."],
        judge=FakeGenerator(lambda m, i, s: '{"winner": "B"}'),  # B in both orders: each answer wins once
    )
    assert isinstance(callback, TrainerCallback)
    callback.on_evaluate(None, SimpleNamespace(global_step=3), None)
    assert model.training  # restored after generating
    (logs,) = logged
    assert set(logs) == {
        "eval_xl_language_fidelity",
        "eval_xl_line_pass_rate",
        "eval_xl_empty_rate",
        "eval_xl_win_rate",
    }
    assert logs["eval_xl_win_rate"] == 50.0 and logs["eval_xl_empty_rate"] == 0.0
    assert callback.history[0]["step"] == 3 and len(callback.history[0]["answers"]) == 2
    with pytest.raises(InvalidArgumentError, match="one reference per prompt"):
        XlMetricCallback(trainer, prompts, ["de", "mt"], judge=FakeGenerator())


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_values_from_the_dataset_are_one_clear_error(missing):
    """None/NaN (a pandas gap) in a prompt, completion, reference or language: an error naming the position."""
    reward = XlAlpacaEvalRewardFunc(FakeGenerator(lambda m, i, s: '{"winner": "tie"}'))
    ok = {"prompts": ["Q?", "Q2?"], "completions": ["A", "B"], "reference": ["R", "S"], "language": ["de", "de"]}
    for column, label in (("prompts", "prompts"), ("completions", "completions"), ("reference", "reference")):
        bad = {**ok, column: [ok[column][0], missing]}
        with pytest.raises(InvalidArgumentError, match=rf"^{label}\[1\] is {missing}, not a string"):
            reward(**bad)
    with pytest.raises(InvalidArgumentError, match=rf"^language\[1\] is {missing}, not a language code"):
        reward(**{**ok, "language": ["de", missing]})
    judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(lambda m, i, s: '{"winner": "A"}'), language="de")
    with pytest.raises(InvalidArgumentError, match=r"^completions\[0\]\[1\] is"):
        judge.judge(["Q?"], [["A", missing]])
