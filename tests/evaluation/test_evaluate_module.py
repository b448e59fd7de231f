"""The ``evaluate`` metric folder: loads offline, fidelity without a judge, full scores with a (fake) judge."""

from __future__ import annotations

import doctest
import importlib.util
import math
from pathlib import Path

import pytest

from xl_suite.engines.fake import FakeGenerator


REPO_ROOT = Path(__file__).resolve().parents[2]

METRIC = str(REPO_ROOT / "evaluate_metrics" / "xl_alpacaeval")
PREDS = [
    "Das Wetter ist heute wirklich schön und warm.",
    "The weather is really nice today, isn't it?",
    "Il-Belt Valletta hija l-kapitali ta' Malta u għandha ħafna knejjes.",
]
LANGS = ["de", "de", "mt"]
REFS = ["Heute ist es sonnig.", "Es regnet.", "Valletta hija l-kapitali."]
INSTR = [
    "How is the weather? Please respond in German.",
    "How is the weather? Please respond in German.",
    "Describe Valletta. Please respond in Maltese.",
]


@pytest.fixture(scope="module")
def evaluate():
    """``evaluate``, imported when a test of this module first needs it: importing it imports transformers and torch
    (several seconds), which collecting the suite should not pay."""
    return pytest.importorskip("evaluate")


def always_a(messages, i, sampling):
    return '{"winner": "A"}'


def test_fidelity_config(evaluate):
    metric = evaluate.load(METRIC, "fidelity")
    out = metric.compute(predictions=PREDS, languages=LANGS)
    assert out["language_fidelity"] == pytest.approx(200 / 3)
    assert out["detected_language"] == ["de", "en", "mt"] and out["is_target"] == [True, False, True]
    assert set(out["per_language"]) == {"de", "mt"}
    with pytest.raises(ValueError, match="never judges"):
        metric.compute(predictions=PREDS, languages=LANGS, judge=FakeGenerator(always_a))


def test_default_config_without_judge_is_fidelity_only(evaluate):
    metric = evaluate.load(METRIC)
    out = metric.compute(predictions=PREDS, references=REFS, instructions=INSTR, languages=LANGS)
    assert "win_rate" not in out and out["language_fidelity"] == pytest.approx(200 / 3)


def test_default_config_with_judge(evaluate, tmp_path):
    metric = evaluate.load(METRIC)
    judge = FakeGenerator(always_a)
    out = metric.compute(
        predictions=PREDS,
        references=REFS,
        instructions=INSTR,
        languages=LANGS,
        judge=judge,
        annotation_cache_dir=str(tmp_path),
        n_resamples=100,
        lc_method="mle",
    )
    assert out["win_rate"] == 50.0 and out["prefer_first_rate"] == 1.0 and out["parse_rate"] == 100.0
    assert out["preferences"] == [0.5, 0.5, 0.5] and out["pref_model_first"] == [1.0, 1.0, 1.0]
    assert out["rubric_scores"] == [None, None, None] and out["rubric_parse_rate"] == 0.0  # rubric reply unparsed
    assert math.isnan(out["rubric_fluency"])
    assert set(out["per_language"]) == {"de", "mt"} and out["per_language"]["de"]["n"] == 2
    assert out["ledger"]["pairwise_judge"]["judged_now"] == 6
    assert {
        "ci_low",
        "ci_high",
        "standard_error",
        "discrete_win_rate",
        "lc_minimal_winrate",
        "language_fidelity",
        "line_pass_rate",
        "verdicts",
        "detected_language",
    } <= set(out)
    # The annotation cache: a second metric call sends no parsed judgment again; only the 3 unparsed rubric
    # judgments are failures, retried (up to 3 attempts each).
    seen = judge.prompts_seen
    again = metric.compute(
        predictions=PREDS,
        references=REFS,
        instructions=INSTR,
        languages=LANGS,
        judge=judge,
        annotation_cache_dir=str(tmp_path),
        n_resamples=100,
        lc_method="mle",
    )
    assert judge.prompts_seen == seen + 3 and again["ledger"]["pairwise_judge"]["from_cache"] == 6
    assert again["ledger"]["pairwise_judge"]["judged_now"] == 0 and again["ledger"]["rubric_judge"]["judged_now"] == 3


def test_multiple_references_schema(evaluate):
    metric = evaluate.load(METRIC)
    out = metric.compute(
        predictions=PREDS[:1],
        references=[["a", "b"]],
        instructions=INSTR[:1],
        languages=["de"],
        judge=FakeGenerator(always_a),
        rubric=False,
        n_resamples=10,
        lc_method="mle",
    )
    assert out["preferences"] == [0.5] and "rubric_fluency" not in out


def test_preset_config_builds_judge_lazily(evaluate):
    metric = evaluate.load(METRIC, "local-vllm", judge_model="tiny-judge", judge_backend="fake")
    assert isinstance(metric.judge, FakeGenerator) and metric.judge.model == "tiny-judge"
    out = metric.compute(
        predictions=PREDS,
        references=REFS,
        instructions=INSTR,
        languages=LANGS,
        rubric=False,
        order="random",
        n_resamples=10,
        lc_method="mle",
    )
    assert out["n_unparsed"] == 3 and math.isnan(out["win_rate"])  # the fake's default reply is not a verdict
    assert out["warnings"] and out["ledger"]["pairwise_judge"]["requests"] == 3
    metric.close()
    assert metric.judge is None


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_configs_and_bad_input(evaluate):
    with pytest.raises(ValueError, match="Unknown config 'gpt-5'"):
        evaluate.load(METRIC, "gpt-5")
    metric = evaluate.load(METRIC, "local-vllm")  # no judge_model: fails only when asked to judge
    with pytest.raises(ValueError, match="needs a judge model"):
        metric.compute(predictions=PREDS, references=REFS, instructions=INSTR, languages=LANGS)
    metric = evaluate.load(METRIC, "fidelity")
    with pytest.raises(ValueError, match="Unknown language 'xx'"):
        metric.compute(predictions=PREDS, languages=["de", "de", "xx"])
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        metric.compute(predictions=PREDS, languages=["de"])


def test_kwargs_description_examples_run(monkeypatch):
    """The docstring examples of the metric (evaluate layout) are doctests: run them from the repo root."""
    monkeypatch.chdir(REPO_ROOT)
    spec = importlib.util.spec_from_file_location("xl_alpacaeval_module", f"{METRIC}/xl_alpacaeval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    test = doctest.DocTestParser().get_doctest(module._KWARGS_DESCRIPTION, {}, "xl_alpacaeval", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 8


def test_fidelity_config_reports_strict_and_family_aware_scores(evaluate):
    metric = evaluate.load(METRIC, "fidelity")
    out = metric.compute(
        predictions=[
            "Das Wetter ist heute wirklich schön.",
            "Vuê il timp al è biel, o lin a fâ une cjaminade tal paîs.",
        ],
        languages=["de", "fur"],
    )
    assert out["language_fidelity"] == 100.0 and out["language_fidelity_strict"] == 100.0
    assert out["is_target_strict"] == [True, None]
    assert out["per_language"]["fur"]["status"] == "n/a" and out["per_language"]["fur"]["reason"]


def test_default_config_computes_fidelity_from_predictions_and_languages_alone(evaluate):
    metric = evaluate.load(METRIC)
    out = metric.compute(predictions=PREDS, languages=LANGS)
    assert out["language_fidelity"] == pytest.approx(200 / 3) and "win_rate" not in out
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        metric.compute(predictions=PREDS, languages=["de"])
    with pytest.raises(ValueError, match="got also \\['rubric'\\]"):
        metric.compute(predictions=PREDS, languages=LANGS, rubric=False)
    # a judge still needs the references and instructions
    with pytest.raises(ValueError, match="missing"):
        metric.compute(predictions=PREDS, languages=LANGS, judge=FakeGenerator(always_a))


def test_requirements_name_the_package_and_satisfy_evaluates_dependency_check(evaluate, monkeypatch):
    """requirements.txt covers every library the script imports; evaluate's check names the pip requirement."""
    import sys

    from evaluate.loading import _download_additional_modules, get_imports
    from evaluate.utils.file_utils import DownloadConfig
    from packaging.requirements import Requirement

    import xl_suite

    lines = (Path(METRIC) / "requirements.txt").read_text(encoding="utf-8").splitlines()
    reqs = {r.name: r for r in (Requirement(x) for x in lines if x.strip() and not x.startswith("#"))}
    assert "eval" in reqs["xl-suite"].extras and reqs["xl-suite"].specifier.contains(xl_suite.__version__)
    imports = get_imports(f"{METRIC}/xl_alpacaeval.py")
    libraries = {
        name.replace("_", "-")
        for kind, name, _, _ in imports
        if kind == "library" and name not in sys.stdlib_module_names and name != "__future__"
    }
    assert libraries and libraries <= set(reqs), libraries - set(reqs)
    monkeypatch.setitem(sys.modules, "xl_suite", None)  # as on a machine without xl-suite
    with pytest.raises(ImportError, match=r"pip install xl-suite\[eval\]"):
        _download_additional_modules("xl_alpacaeval", METRIC, imports, DownloadConfig())


def test_metric_path_is_the_checkout_folder():
    import xl_suite

    assert Path(xl_suite.metric_path()) == Path(METRIC)
    with pytest.raises(ValueError, match="Unknown metric 'bleu'"):
        xl_suite.metric_path("bleu")


@pytest.mark.slow
def test_loads_from_an_installed_wheel(evaluate, tmp_path):
    """Build the wheel, install it into a bare folder and load the metric from there, away from the checkout."""
    import json
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("xl_suite-*.whl"))
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    code = (
        "import json, evaluate, xl_suite\n"
        "path = xl_suite.metric_path()\n"
        "m = evaluate.load(path)\n"
        "out = m.compute(predictions=['Das Wetter ist heute wirklich schön.', 'The weather is nice.'], "
        "languages=['de', 'de'])\n"
        "print(json.dumps({'package': xl_suite.__file__, 'path': path, 'fidelity': out['language_fidelity']}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site)) and out["path"].startswith(str(site))
    assert out["fidelity"] == 50.0


@pytest.mark.slow
def test_loads_from_a_hub_space(evaluate, tmp_path):
    """The metric folder pushed as a Space to the Hub stand-in loads with ``evaluate.load("user/xl_alpacaeval")``.

    ``evaluate`` fetches ``{HF_ENDPOINT}/spaces/<id>/resolve/<rev>/xl_alpacaeval.py`` (it reads HF_ENDPOINT at import,
    hence the subprocess), checks the script's imports against the installed packages (xl-suite here) and loads it.
    """
    import json
    import os
    import subprocess
    import sys

    from hub_server import serve_hub

    import xl_suite

    code = (
        "import json, sys, evaluate\n"
        "from huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "api.create_repo('me/xl_alpacaeval', repo_type='space', space_sdk='gradio')\n"
        "api.upload_folder(repo_id='me/xl_alpacaeval', repo_type='space', folder_path=sys.argv[1],\n"
        "                  ignore_patterns=['__pycache__/*', '*.pyc'])\n"
        "m = evaluate.load('me/xl_alpacaeval', 'fidelity')\n"
        "out = m.compute(predictions=['Das Wetter ist heute wirklich schön.', 'The weather is nice.'], "
        "languages=['de', 'de'])\n"
        "print(json.dumps({'fidelity': out['language_fidelity'], 'files': sorted(api.list_repo_files("
        "'me/xl_alpacaeval', repo_type='space'))}))\n"
    )
    with serve_hub(tmp_path / "hub") as (url, server):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XL_SUITE_"))}
        env.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_dummy", HF_HOME=str(tmp_path / "hf"))
        r = subprocess.run(
            [sys.executable, "-c", code, xl_suite.metric_path()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        fetched = [p for method, p in server.requests if method == "GET" and p.startswith("/spaces/")]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["fidelity"] == 50.0
    assert {"xl_alpacaeval.py", "requirements.txt", "README.md", "app.py"} <= set(out["files"])
    assert any(p.endswith("/xl_alpacaeval.py") for p in fetched), fetched  # served by the stand-in, not a checkout


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_a_judge_given_by_name_or_empty_inputs_are_one_clear_error(evaluate):
    """The README invites `judge=` a preset such as gpt-4o: a name is not an engine, and the error says how to get
    one; empty lists fail inside evaluate itself, so the metric says what is missing first."""
    metric = evaluate.load(METRIC)
    with pytest.raises(ValueError, match=r"judge='gpt-4o' is a name.*load_preset\('gpt-4o'\)\.build_judge\(\)") as err:
        metric.compute(predictions=PREDS, references=REFS, instructions=INSTR, languages=LANGS, judge="gpt-4o")
    assert "evaluate.load('evaluate_metrics/xl_alpacaeval', 'gpt-4o')" in str(err.value)
    with pytest.raises(ValueError, match=r"judge='my/model' is a name.*judge_model='my/model'"):
        evaluate.load(METRIC, judge="my/model").compute(
            predictions=PREDS, references=REFS, instructions=INSTR, languages=LANGS
        )
    with pytest.raises(ValueError, match="No predictions given"):
        metric.compute(predictions=[], references=[], instructions=[], languages=[], judge=FakeGenerator(always_a))
