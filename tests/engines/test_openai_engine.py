"""The OpenAI-compatible backend (xl_suite.engines.openai_engine) against faulty servers on 127.0.0.1: key-echoing
errors, hangs, trickling replies, empty completions, bad kwargs, a judge that stops mid-batch."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from xl_suite.engines.base import SamplingConfig
from xl_suite.errors import GenerationError, InvalidArgumentError


pytest.importorskip("openai")

KEY = "sk-test-THISISASECRETKEY1234567890"


def _serve(behaviour):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            status, body = behaviour(self)
            if status is None:
                return
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        server, url = _serve(behaviour)
        servers.append(server)
        return url

    yield start
    for s in servers:
        s.shutdown()


def _gen(url, monkeypatch, **kw):
    from xl_suite.engines.openai_engine import OpenAIGenerator

    monkeypatch.setenv("XL_TEST_API_KEY", KEY)
    return OpenAIGenerator("m", base_url=url, api_key_env="XL_TEST_API_KEY", backoff_base=0.01, **kw)


CONV = [[{"role": "user", "content": "hi"}]]


def _echo_key(handler):
    auth = handler.headers.get("authorization", "")
    return 401, {"error": {"message": f"Incorrect API key provided: {auth} (hf_abcdefghijklmnopqrst)"}}


def test_key_echoed_by_the_server_is_scrubbed_from_errors_and_logs(serve, monkeypatch, caplog):
    url = serve(_echo_key)
    gen = _gen(url, monkeypatch)
    with caplog.at_level(logging.DEBUG), pytest.raises(GenerationError) as err:
        gen.generate(CONV, SamplingConfig(max_tokens=4))
    text = str(err.value) + repr(err.value.__cause__) + caplog.text + repr(gen) + str(vars(gen))
    assert "HTTP 401" in str(err.value) and "***" in str(err.value)
    assert KEY not in text and "hf_abcdefghijklmnopqrst" not in text


def test_retry_warnings_are_scrubbed(serve, monkeypatch, caplog):
    url = serve(lambda h: (503, {"error": {"message": "busy"}}))
    gen = _gen(url, monkeypatch, max_retries=1)
    logging.getLogger("xl_suite.engines.openai_engine").warning("leak %s", KEY)
    with caplog.at_level(logging.WARNING):
        (row,) = gen.generate(CONV, SamplingConfig(max_tokens=4))
    assert row[0].extra["status"] == "error" and KEY not in row[0].extra["error"]
    assert KEY not in caplog.text and "leak ***" in caplog.text


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_hung_server_fails_within_the_total_budget(serve, monkeypatch):
    url = serve(lambda h: (time.sleep(30), (None, None))[1])
    gen = _gen(url, monkeypatch, timeout=0.5, total_timeout=2)
    t0 = time.monotonic()
    (row,) = gen.generate(CONV, SamplingConfig(max_tokens=4))
    assert row[0].extra["status"] == "error" and "total_timeout" in row[0].extra["error"]
    assert time.monotonic() - t0 < 5


def test_default_budget_is_about_a_minute(monkeypatch):
    gen = _gen("http://127.0.0.1:9/v1", monkeypatch)
    assert gen.total_timeout == 60 and gen.timeout <= 60


def _chat(content, finish="stop"):
    return lambda h: (
        200,
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3},
        },
    )


def test_empty_completion_is_marked_as_a_failure(serve, monkeypatch):
    gen = _gen(serve(_chat("")), monkeypatch)
    [[c]] = gen.generate(CONV, SamplingConfig(max_tokens=4))
    assert c.text == "" and c.extra["status"] == "empty"
    gen = _gen(serve(_chat("Hallo")), monkeypatch)
    [[c]] = gen.generate(CONV, SamplingConfig(max_tokens=4))
    assert c.extra["status"] == "ok"


def test_unknown_engine_kwarg_lists_the_allowed_ones(monkeypatch):
    from xl_suite.engines.registry import build_generator

    monkeypatch.setenv("XL_TEST_API_KEY", KEY)
    with pytest.raises(InvalidArgumentError, match=r"'timout'.*Allowed keyword arguments: \[.*'timeout'"):
        build_generator("openai", "m", base_url="http://127.0.0.1:9/v1", api_key_env="XL_TEST_API_KEY", timout=3)


@pytest.mark.parametrize("kw", [{"timeout": 0}, {"total_timeout": -1}, {"max_retries": -1}])
def test_bad_numbers_are_invalid_argument_errors(monkeypatch, kw):
    with pytest.raises(InvalidArgumentError):
        _gen("http://127.0.0.1:9/v1", monkeypatch, **kw)


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_a_judge_that_stops_mid_batch_keeps_every_answer_it_got(serve, monkeypatch, tmp_path):
    """The HTTP judge stores each answer as it arrives (a piece file per request), not when its whole batch is
    done: a server that answers some requests and then fails loses only the requests in flight, and the rerun sends
    only the others."""
    from xl_suite.engines.openai_engine import OpenAIGenerator
    from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise

    rerun_key = KEY[::-1]  # the rerun's requests are told apart by their key: a request of the first run that reaches
    answered = {"first": 0, "rerun": 0}  # the server after its client gave up is not counted as the rerun's
    lock = threading.Lock()
    verdict = _chat('{"winner": "A"}')

    def some_then_fail(handler):  # answers the first run's first 5 requests, then fails; answers every rerun request
        run = "rerun" if handler.headers.get("authorization", "").endswith(rerun_key) else "first"
        with lock:
            answered[run] += 1
            n = answered[run]
        return verdict(handler) if run == "rerun" or n <= 5 else (401, {"error": {"message": "key revoked"}})

    items = {
        "instructions": [f"Question {i}?" for i in range(8)],
        "model_outputs": [f"Antwort {i}" for i in range(8)],
        "reference_outputs": [f"Referenz {i}" for i in range(8)],
        "languages": ["de"] * 8,
    }
    url = serve(some_then_fail)
    config = JudgeConfig(chunk_size=8, batch_size=64, rubric=False, logprobs=None)
    with pytest.raises(GenerationError, match="401"):
        judge_pairwise(
            **items, judge=_gen(url, monkeypatch, max_concurrency=2), config=config, cache_dir=str(tmp_path)
        )
    stored = sum(
        pq.read_table(p).num_rows for p in tmp_path.glob("judge-pairwise-*/chunk-*") if ".corrupt" not in p.name
    )
    assert 4 <= stored <= 5, stored  # 5 answered; at most the one in flight beside the failing request is lost

    monkeypatch.setenv("XL_TEST_RERUN_KEY", rerun_key)
    rerun = OpenAIGenerator("m", base_url=url, api_key_env="XL_TEST_RERUN_KEY", backoff_base=0.01, max_concurrency=2)
    res = judge_pairwise(**items, judge=rerun, config=config, cache_dir=str(tmp_path))
    assert answered["rerun"] == 16 - stored and res.ledger["from_cache"] == stored
    assert not list(tmp_path.glob("judge-pairwise-*/*.piece-*")), "pieces are deleted once their chunk is written"


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_a_trickling_reply_fails_within_the_total_budget_and_progress_is_shown(monkeypatch, caplog):
    """A server that sends its reply at 2 bytes a second never trips a per-read timeout; the total budget holds
    anyway, and while it waits the backend says so."""
    body = json.dumps(_chat("Hallo")(None)[1]).encode()

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 2):
                    self.wfile.write(body[i : i + 2])
                    self.wfile.flush()
                    time.sleep(0.5)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = _gen(f"http://127.0.0.1:{server.server_address[1]}/v1", monkeypatch, timeout=1, total_timeout=2.5)
        gen.progress_every = 0.5
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="xl_suite.engines.openai_engine"):
            rows = gen.generate(CONV * 2, SamplingConfig(max_tokens=4))
        elapsed = time.monotonic() - t0
        gen.close()
    finally:
        server.shutdown()
    assert [r[0].extra["status"] for r in rows] == ["error", "error"]
    assert "total_timeout" in rows[0][0].extra["error"]
    assert elapsed < 5, elapsed  # the reply alone would take len(body) / 4 s (~60 s)
    assert "still waiting for 2 request(s) to model 'm'" in caplog.text
    assert "gives up after total_timeout=2.5 s" in caplog.text
