"""Failures that were hidden or crashed a run (issue 20, outside fault test): each ends in correct output or one
clear error.

* a stage's share of failed rows is judged per stage, never over all stages' rows (a synthesis stage losing a fifth
  of its seeds exited 0);
* failed rows never reach an output as data (translate wrote failed translations as empty prompts that the loader
  served; generate wrote failed answers that evaluate counted as losses; en_scored held unparsed scores);
* one bad HTTP 200 reply (truncated JSON, an HTML page, a content-filter reply without content, no choices) is one
  failed row, not a traceback: generate, translate, evaluate and synthesize go on through the HTTP stand-in below;
* a judge whose server returns no log-probabilities stops with one line naming the fix.
"""

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from xl_suite.cli import main
from xl_suite.engines.base import SamplingConfig
from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
from xl_suite.errors import FailureRateError
from xl_suite.run.policy import check_stage_failure_rates, drop_failed


ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "x"} for k in range(6)
]
KEY = "sk-test-THISISASECRETKEY1234567890"


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA), encoding="utf-8")
    return path


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the threshold applies per stage ----------------------------------------------------------------------------


class _LosingBacktranslations:
    """The fake synthesis model, but every 5th back-translation request (by content) gets an empty reply."""

    def __init__(self):
        self.inner = FakeSynthesisResponder()

    def __call__(self, messages, index, sampling):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if (
            system.startswith("You write realistic user requests")
            and zlib.crc32(messages[-1]["content"].encode()) % 5 == 0
        ):
            return ""
        return self.inner(messages, index, sampling)


def test_a_synthesis_stage_losing_a_fifth_of_its_seeds_fails_the_run_whatever_the_other_stages_did(tmp_path):
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    config = SynthesisConfig(languages=("mt", "de"), chunk_size=40)
    with pytest.raises(FailureRateError) as err:
        synthesize(
            builtin_seeds(),
            FakeGenerator(_LosingBacktranslations()),
            config,
            output=str(tmp_path),
            max_error_rate=0.05,
        )
    failures = err.value.result.summary["failures"]
    lost = failures["backtranslate"]
    assert lost["by_status"] == {"empty": lost["failed"]} and lost["failed"] / lost["rows"] > 0.15
    # the share over all stages' rows (what was checked before) is within the threshold: that hid this stage
    assert sum(e["failed"] for e in failures.values()) / sum(e["rows"] for e in failures.values()) < 0.05
    message = str(err.value)
    assert message.startswith(f"backtranslate: {lost['failed']} of {lost['rows']} LLM outputs failed")
    assert "above --max-error-rate 0.05 (checked per stage)" in message and "\n" not in message
    assert (tmp_path / "mt.parquet").is_file() and (tmp_path / "summary.json").is_file(), "everything is written"


def test_the_stage_check_names_every_stage_above_and_passes_within():
    stages = {"a": ({"error": 3}, 10), "b": ({}, 1000), "c": ({"unparsed": 1, "empty": 1}, 10)}
    with pytest.raises(FailureRateError) as err:
        check_stage_failure_rates(stages, max_error_rate=0.1, what="rows")
    assert "a: 3 of 10 rows failed (30.0%: error 3); c: 2 of 10 rows failed (20.0%: empty 1, unparsed 1)" in str(
        err.value
    )
    assert "pass --max-error-rate 0.3 or higher" in str(err.value)
    line = check_stage_failure_rates(stages, max_error_rate=0.3)
    assert line.startswith("a: 3 of 10 rows failed") and "within --max-error-rate 0.3 per stage" in line
    assert check_stage_failure_rates({"a": ({}, 0)}, max_error_rate=0.0) is None


def test_evaluate_judges_each_judgment_stage_on_its_own(capsys):
    from xl_suite.commands.evaluate import check_judgments

    def row(status, judge="j1"):
        return {"parse_status": status, "judge_model": judge}

    # rubric: 12 of 100 unparsed (12%), hidden before by 400 parsed pairwise judgments (12 of 500 = 2.4%)
    result = SimpleNamespace(judgments=[row("ok")] * 400, rubric_rows=[row("unparsed")] * 12 + [row("ok")] * 88)
    with pytest.raises(FailureRateError, match=r"^rubric: 12 of 100 judgments failed \(12.0%: unparsed 12\), above"):
        check_judgments(result, 0.05)
    # a jury: one judge failing 10% of its pairwise judgments, the other none
    result = SimpleNamespace(
        judgments=[row("ok", "j1")] * 200 + [row("unparsed", "j2")] * 10 + [row("ok", "j2")] * 90, rubric_rows=[]
    )
    with pytest.raises(FailureRateError, match=r"^pairwise \(j2\): 10 of 100 judgments failed"):
        check_judgments(result, 0.05)
    check_judgments(result, 0.1)
    assert "pairwise (j2): 10 of 100 judgments failed (10.0%: unparsed 10), within" in capsys.readouterr().out


# -- failed rows never reach an output as data ------------------------------------------------------------------


def test_drop_failed_keeps_usable_and_flagged_rows():
    import datasets

    ds = datasets.Dataset.from_dict(
        {"x": list("abcdef"), "s": ["ok", "error", "prompt_truncated", "truncated", "too_long", "unparsed"]}
    )
    kept, failed = drop_failed(ds, ["s", "not_a_column"])
    assert list(kept["x"]) == ["a", "c", "d"] and failed == {"error": 1, "too_long": 1, "unparsed": 1}
    assert drop_failed(ds, ["nope"]) == (ds, {})


def test_translate_never_writes_a_failed_translation_and_the_loader_never_serves_one(alpaca_file, tmp_path, capsys):
    from xl_suite.datasets_api import load_xl_suite

    out = tmp_path / "m"
    argv = ["translate", "--backend", "fake", "--model", "t", "--languages", "de", "--source", alpaca_file]
    argv += ["--output", out, "--engine-kwargs", json.dumps({"empty_every": 3})]
    rc, stdout, err = _cli(argv, capsys)
    rows = _rows(out / "de.jsonl")
    n_failed = 6 - len(rows)
    assert 0 < n_failed < 6 and all(r["translation_status"] == "ok" and r["instruction"] for r in rows)
    assert rc == 3 and f"translate de: {n_failed} of 6 translations failed" in err and "Traceback" not in err
    assert f"{n_failed} failed, not written" in stdout
    served = load_xl_suite("m-alpacaeval-de", split="test", source=str(out), cache_dir=str(tmp_path / "c1"))
    assert served.num_rows == 6 - n_failed and all(served["instruction"])

    # a file written before (failed rows kept as empty prompts): the builder leaves them out
    old = tmp_path / "old"
    old.mkdir()
    bad = {**rows[0], "id": "bad", "instruction": "", "translation_status": "empty"}
    (old / "de.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad]), encoding="utf-8")
    served = load_xl_suite("m-alpacaeval-de", split="test", source=str(old), cache_dir=str(tmp_path / "c2"))
    assert served.num_rows == len(rows) and "bad" not in served["id"]

    # the engine recovers: the rerun the message advises translates only the failed rows, and writes them
    rc, stdout, err = _cli(argv[:-2], capsys)
    assert rc == 0, err
    assert len(_rows(out / "de.jsonl")) == 6 and f"{6 - n_failed} of 6 translations from cache" in stdout


def test_generate_never_writes_nor_pushes_a_failed_answer(alpaca_file, tmp_path, capsys, monkeypatch):
    import xl_suite.hub

    pushed = {}
    monkeypatch.setattr(
        xl_suite.hub, "publish_config", lambda repo, name, data: pushed.setdefault(name, data) and "url"
    )
    out = tmp_path / "refs"
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", alpaca_file]
    argv += ["--output", out, "--as-reference", "--push", "user/refs", "--max-error-rate", "0.9"]
    argv += ["--engine-kwargs", json.dumps({"empty_every": 3})]
    rc, stdout, err = _cli(argv, capsys)
    assert rc == 0, err
    rows = _rows(out / "xl-alpacaeval-de.jsonl")
    assert 0 < len(rows) < 6 and all(r["reference_status"] == "ok" and r["reference"] for r in rows)
    test = pushed["xl-alpacaeval-de"]["test"]
    assert test.num_rows == len(rows) and set(test["reference_status"]) == {"ok"}


def test_en_scored_holds_no_pair_whose_scoring_failed(tmp_path):
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    config = SynthesisConfig(languages=("mt",), max_seeds=8, chunk_size=4)
    gen = FakeGenerator(FakeSynthesisResponder(unparseable_every=2))
    result = synthesize(builtin_seeds(), gen, config, output=str(tmp_path))
    failed = result.summary["failures"]["score"]["failed"]
    scored = pq.read_table(tmp_path / "en_scored.parquet")
    assert failed > 0 and set(scored["score_status"].to_pylist()) == {"ok"}
    assert scored.num_rows == result.summary["failures"]["score"]["rows"] - failed


# -- one bad reply is one failed row: the four LLM commands through an HTTP stand-in -----------------------------


def _completion(body: dict, content) -> dict:
    n = body.get("n", 1)
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": content[i]}}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


#: Bad replies, each sent with HTTP 200: (content type, body).
BAD_REPLIES = {
    "truncated JSON": ("application/json", lambda body: json.dumps(_completion(body, ["Hallo"] * 9))[:60]),
    "HTML login page": ("text/html", lambda body: f"<html><body>Log in (token {KEY})</body></html>"),
    "content filter": (
        "application/json",
        lambda body: json.dumps(
            {
                **_completion(body, [None] * 9),
                "choices": [
                    {"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": None}}
                ],
            }
        ),
    ),
    "no choices": (
        "application/json",
        lambda body: json.dumps({k: v for k, v in _completion(body, [""]).items() if k != "choices"}),
    ),
}


class _Server:
    """An OpenAI-compatible stand-in answering with the fake synthesis model (which also answers the judges and
    plain prompts); request number ``bad_at`` (1-based, in arrival order; None: every request) gets the bad reply
    ``bad``."""

    def __init__(self, bad: str | None = None, bad_at: int | None = 1):
        self.bad, self.bad_at, self.requests = bad, bad_at, 0
        self.lock = threading.Lock()
        responder = FakeSynthesisResponder()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests += 1
                    n = owner.requests
                if owner.bad is not None and owner.bad_at in (None, n):
                    ctype, make = BAD_REPLIES[owner.bad]
                    data = make(body)
                else:
                    sampling = SamplingConfig(n=body.get("n", 1), json_schema=None)
                    messages = body["messages"]
                    ctype = "application/json"
                    data = json.dumps(_completion(body, [responder(messages, i, sampling) for i in range(sampling.n)]))
                data = data.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        servers.append(_Server(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # sent to the stand-in; never printed


def _http(server, **extra) -> str:
    return json.dumps({"base_url": server.url, "max_retries": 0, "backoff_base": 0.01, "max_concurrency": 2, **extra})


@pytest.mark.parametrize("bad", sorted(BAD_REPLIES))
def test_one_bad_reply_is_one_failed_answer_not_a_traceback(bad, alpaca_file, tmp_path, capsys, server, caplog):
    pytest.importorskip("openai")
    srv = server(bad=bad)
    out = tmp_path / "ans"
    argv = ["generate", "--backend", "openai", "--model", "m", "--config", "xl-alpacaeval-de"]
    argv += ["--source", alpaca_file, "--output", out, "--engine-kwargs", _http(srv)]
    rc, stdout, err = _cli(argv, capsys)
    assert "Traceback" not in err and KEY not in err + stdout + caplog.text
    assert rc == 3 and err.count("\n") == 1 and "xl-alpacaeval-de: 1 of 6 answers failed (16.7%: error 1)" in err
    assert len(_rows(out / "xl-alpacaeval-de.jsonl")) == 5, "the rest of the batch is kept"
    assert "request failed, row marked 'error'" in caplog.text, "the (scrubbed) reason is logged"
    rc, stdout, err = _cli(argv, capsys)  # the server is healthy again: the rerun asks for that row only
    assert rc == 0, err
    assert len(_rows(out / "xl-alpacaeval-de.jsonl")) == 6 and srv.requests == 7


def test_a_bad_reply_in_translate_evaluate_and_synthesize_is_one_failed_row(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    # translate
    srv = server(bad="HTML login page")
    argv = ["translate", "--backend", "openai", "--model", "m", "--languages", "de", "--source", alpaca_file]
    rc, stdout, err = _cli(
        [*argv, "--output", tmp_path / "m", "--engine-kwargs", _http(srv), "--max-error-rate", "0.2"], capsys
    )
    assert rc == 0 and "translate de: 1 of 6 translations failed" in stdout and "Traceback" not in err, err
    assert len(_rows(tmp_path / "m" / "de.jsonl")) == 5

    # evaluate: answers and references from the fake engine, the judge over HTTP (discrete verdicts)
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        gen = [
            "generate",
            "--backend",
            "fake",
            "--model",
            kind,
            "--config",
            "xl-alpacaeval-de",
            "--source",
            alpaca_file,
        ]
        assert _cli([*gen, "--output", tmp_path / kind, *extra], capsys)[0] == 0
    preset = tmp_path / "judge.json"
    preset.write_text(json.dumps({"judge_backend": "openai", "logprobs": None, "rubric": False}), encoding="utf-8")
    srv = server(bad="content filter", bad_at=3)
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-preset",
        preset,
    ]
    argv += [
        "--judge-model",
        "j",
        "--judge-engine-kwargs",
        _http(srv),
        "--n-resamples",
        "10",
        "--output",
        tmp_path / "r",
    ]
    rc, stdout, err = _cli([*argv, "--max-error-rate", "0.1"], capsys)
    assert rc == 0 and "pairwise: 1 of 12 judgments failed (8.3%: error 1), within" in stdout, (stdout, err)

    # synthesize
    srv = server(bad="truncated JSON", bad_at=2)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(json.dumps({"text": f"A passage about gardening number {k}. " * 3}) + "\n" for k in range(4))
    )
    argv = ["synthesize", "--backend", "openai", "--model", "m", "--seeds", seeds, "--languages", "mt"]
    argv += ["--output", tmp_path / "s", "--engine-kwargs", _http(srv), "--no-progress", "--chunk-size", "2"]
    rc, stdout, err = _cli(argv, capsys)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert sum(e["by_status"].get("error", 0) for e in summary["failures"].values()) == 1
    assert rc == 3 and "1 of 4 LLM outputs failed (25.0%: error 1)" in err and "Traceback" not in err, err


def test_many_bad_replies_in_a_row_stop_the_run_with_one_clear_error(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    from xl_suite.engines.openai_engine import OpenAIGenerator

    srv = server(bad="HTML login page", bad_at=None)  # every reply: a proxy's login page
    many = [
        {"instruction": f"Question number {k}?", "output": "x"}
        for k in range(OpenAIGenerator.max_consecutive_failures + 4)
    ]
    source = tmp_path / "many.json"
    source.write_text(json.dumps(many), encoding="utf-8")
    argv = ["generate", "--backend", "openai", "--model", "m", "--config", "xl-alpacaeval-de", "--source", source]
    rc, _, err = _cli([*argv, "--output", tmp_path / "a", "--engine-kwargs", _http(srv, max_concurrency=1)], capsys)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err and KEY not in err
    assert "failed in a row; stopping" in err and "not a chat completion" in err
    assert srv.requests == OpenAIGenerator.max_consecutive_failures


def test_a_judge_without_logprobs_stops_naming_the_fix(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        gen = [
            "generate",
            "--backend",
            "fake",
            "--model",
            kind,
            "--config",
            "xl-alpacaeval-de",
            "--source",
            alpaca_file,
        ]
        assert _cli([*gen, "--output", tmp_path / kind, *extra], capsys)[0] == 0
    srv = server()  # answers, but never with log-probabilities
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-backend",
        "openai",
    ]
    argv += ["--judge-model", "j", "--judge-engine-kwargs", _http(srv), "--no-rubric", "--output", tmp_path / "r"]
    rc, _, err = _cli(argv, capsys)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "returned no log-probabilities" in err and '"logprobs": null' in err and "--judge-preset" in err
