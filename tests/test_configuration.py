"""One config object per job: the CLI is generated from the dataclasses, config files use the same names."""

from __future__ import annotations

import dataclasses

import pytest

from xl_suite.cli import build_parser
from xl_suite.configuration import apply_config_file, cli_fields, from_args
from xl_suite.engines.spec import EngineSpec
from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.answers import GenerateConfig
from xl_suite.evaluation.judging import JudgeConfig
from xl_suite.evaluation.results import EvaluateConfig
from xl_suite.evaluation.translation import TranslateConfig
from xl_suite.synthesis.config import SynthesisConfig, SynthesisRunOptions


MINIMAL = {
    "synthesize": (["--model", "m", "--languages", "mt", "--output", "o"], [SynthesisConfig, SynthesisRunOptions]),
    "generate": (["--model", "m", "--config", "xl-alpacaeval-de", "--output", "o"], [GenerateConfig]),
    "translate": (["--model", "m", "--languages", "de", "--output", "o"], [TranslateConfig]),
    "evaluate": (["--model-outputs", "a", "--output", "o"], [EvaluateConfig]),
}


def _subparser(command):
    args = build_parser().parse_args([command, *MINIMAL[command][0]])
    return args, args._parser


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_cli_defaults_equal_config_defaults(command):
    args, _ = _subparser(command)
    for cls in MINIMAL[command][1]:
        config = from_args(cls, args)
        for f in cli_fields(cls):
            if f.metadata.get("required"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.name == "storage_options":  # the JSON text is parsed: no options -> None
                default = None
            assert getattr(config, f.name) == default, (command, f.name)


@pytest.mark.parametrize(
    "cls",
    [SynthesisConfig, SynthesisRunOptions, GenerateConfig, TranslateConfig, EvaluateConfig, JudgeConfig, EngineSpec],
)
def test_every_field_has_help(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert not missing, f"{cls.__name__} fields without help text: {missing}"


def test_every_config_flag_is_on_the_command_line():
    _, parser = _subparser("synthesize")
    flags = {opt for a in parser._actions for opt in a.option_strings}
    for f in cli_fields(SynthesisConfig):
        flag = f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"
        assert flag in flags or f"--no-{flag[2:]}" in flags, flag
    assert {"--scorer-model", "--model", "--engine-kwargs", "--no-language-filter", "--template"} <= flags


def test_config_file_sets_defaults_and_the_command_line_wins(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model: from-file\nmax_tokens: 77\ntemperature: 0.5\nconfig: xl-alpacaeval-mt\noutput: out\n")
    _, parser = _subparser("generate")
    ns = apply_config_file(parser, ["--temperature", "0.2"], str(path))
    job = from_args(GenerateConfig, ns)
    assert (job.max_tokens, job.temperature, job.config, job.output) == (77, 0.2, "xl-alpacaeval-mt", "out")
    assert ns.model == "from-file"


def test_config_file_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("max_token: 77\n")
    _, parser = _subparser("generate")
    with pytest.raises(InvalidArgumentError, match=r"unknown keys \['max_token'\].*max_tokens"):
        apply_config_file(parser, [], str(path))


def test_config_file_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    _, parser = _subparser("generate")
    with pytest.raises(InvalidArgumentError, match="bad.yaml"):
        apply_config_file(parser, [], str(path))


def test_missing_required_flag_names_it():
    args = build_parser().parse_args(["generate", "--model", "m", "--output", "o"])
    with pytest.raises(InvalidArgumentError, match="--config is required"):
        from_args(GenerateConfig, args)


def test_python_config_from_file(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text("languages: [mt, de]\nthreshold: 4.0\n")
    config = SynthesisConfig.from_file(str(path))
    assert config.languages == ("mt", "de") and config.threshold == 4.0
    path.write_text("thresold: 4.0\n")
    with pytest.raises(InvalidArgumentError, match="thresold"):
        SynthesisConfig.from_file(str(path))


def test_cli_runs_with_config_file(tmp_path, capsys):
    from xl_suite.cli import main

    path = tmp_path / "job.yaml"
    path.write_text(
        f"backend: fake\nmodel: f\nlanguages: mt\noutput: {tmp_path / 'out'}\nmax_seeds: 2\n"
        "progress: false\nlanguage_filter: false\n"
    )
    rc = main(["synthesize", "--config-file", str(path)])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "mt.parquet").exists()


def test_stage_wiring_is_checked_before_any_engine_call():
    from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
    from xl_suite.synthesis import default_stages, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    config = SynthesisConfig(languages=("mt",), max_seeds=2)
    gen = FakeGenerator(FakeSynthesisResponder())
    stages = default_stages(config)
    swapped = [stages[1], stages[0], *stages[2:]]  # refine before backtranslate: 'instruction' does not exist yet
    with pytest.raises(InvalidArgumentError, match=r"Stage 'refine' reads \['instruction'\]"):
        synthesize(builtin_seeds(), gen, config, stages=swapped)
    assert gen.calls == 0


@pytest.mark.parametrize(
    "command, prefix",
    [("synthesize", ""), ("synthesize", "scorer"), ("generate", ""), ("translate", ""), ("evaluate", "judge")],
)
def test_truncate_prompts_flag_is_off_by_default_and_reaches_the_engine_kwargs(command, prefix):
    from xl_suite.commands._args import engine_spec

    flag = f"--{prefix}-truncate-prompts" if prefix else "--truncate-prompts"
    args, parser = _subparser(command)
    assert flag in parser.format_help()
    off = engine_spec(args, prefix=prefix)
    assert off.truncate_prompts is False and "truncate_prompts" not in off.engine_kwargs
    on = engine_spec(build_parser().parse_args([command, *MINIMAL[command][0], flag]), prefix=prefix)
    assert on.truncate_prompts is True and on.engine_kwargs == {"truncate_prompts": True}


def test_truncate_prompts_enters_the_fingerprint_and_is_refused_where_it_cannot_work():
    plain = EngineSpec(model="m", backend="fake", engine_kwargs={"context_tokens": 64})
    cut = EngineSpec(model="m", backend="fake", engine_kwargs={"context_tokens": 64}, truncate_prompts=True)
    assert cut.engine_kwargs == {"context_tokens": 64, "truncate_prompts": True}
    assert cut.build().fingerprint() != plain.build().fingerprint()
    assert EngineSpec(model="m", engine_kwargs={"truncate_prompts": True}).truncate_prompts  # the JSON way, too
    with pytest.raises(InvalidArgumentError, match="--truncate-prompts contradicts"):
        EngineSpec(model="m", engine_kwargs={"truncate_prompts": False}, truncate_prompts=True)
    with pytest.raises(InvalidArgumentError, match=r"truncate_prompts \(--truncate-prompts\).*openai"):
        EngineSpec(model="gpt-4o-mini", backend="openai", truncate_prompts=True)
    from xl_suite.engines.openai_engine import OpenAIGenerator

    with pytest.raises(InvalidArgumentError, match="openai backend cannot honour truncate_prompts"):
        OpenAIGenerator("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", truncate_prompts=True)


def test_truncate_prompts_from_a_config_file(tmp_path):
    from xl_suite.commands._args import engine_spec

    path = tmp_path / "run.yaml"
    path.write_text("truncate_prompts: true\n")
    _, parser = _subparser("generate")
    args = apply_config_file(parser, MINIMAL["generate"][0], str(path))
    assert engine_spec(args).engine_kwargs == {"truncate_prompts": True}


# -- config files are checked like flags (issue 20) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dry_run: 'false'\n", "dry_run must be true or false (a YAML boolean, not a string), got 'false'"),
        ("chunk_size: 1.5\n", "chunk_size must be an integer, got 1.5"),
        ("temperature: hot\n", "temperature must be a number, got 'hot'"),
    ],
)
def test_config_file_values_are_checked_like_flags(tmp_path, capsys, text, message):
    """Old code: dry_run: 'false' (a string) made a dry run; chunk_size 1.5 failed late."""
    import json

    from xl_suite.cli import main

    src = tmp_path / "alpaca_eval.json"
    src.write_text(json.dumps([{"instruction": f"Explain topic {k}.", "output": "x"} for k in range(3)]))
    job = tmp_path / "job.yaml"
    job.write_text(text)
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", str(src)]
    rc = main([*argv, "--output", str(tmp_path / "o"), "--config-file", str(job)])
    out, err = capsys.readouterr()
    assert rc == 2 and message in err and "Traceback" not in err
    assert "dry run" not in out and not (tmp_path / "o").exists()


def test_a_python_config_file_takes_booleans_only(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("languages: [mt]\ndedup: 'no'\n")
    with pytest.raises(InvalidArgumentError, match="dedup must be true or false"):
        SynthesisConfig.from_file(job)
