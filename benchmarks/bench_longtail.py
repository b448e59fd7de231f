"""Benchmark: do the pipelines keep vLLM fed when answer lengths are long-tailed, as real answers are? (not a test)

Real answers vary a lot in length. An engine call that holds a batch waits for its longest answer while the
engine's running batch drains, so pipelines that send fixed-size calls one after the other lose throughput at
every batch, chunk and stage boundary. This benchmark forces realistic lengths and compares, stage by stage, each
pipeline with the fastest thing vLLM can do with the same requests: one batch holding all of that stage's prompts
with identical per-request sampling, alone on the engine (what one ``LLM.chat`` call does).

* **Lengths**: the word counts of the 805 real AlpacaEval answers of GPT-4o-mini
  (``../shared/data/alpaca_eval/gpt-4o-mini-2024-07-18_outputs.json``, ``--lengths-file``), a long-tailed
  distribution, scaled so that its median is ``--median-tokens`` and capped at ``--max-tokens``. Each request gets
  the length of its prompt's hash, forced with ``min_tokens = max_tokens`` (vLLM then ignores end-of-sequence); JSON
  schemas and stop strings are dropped so that nothing ends a reply early.
* **synthesis**: :func:`xl_suite.synthesis.synthesize` (all default stages, best-of-3) on ``--seeds`` passages;
  **answers**: :func:`xl_suite.evaluation.answers.generate_answers` on ``--prompts`` real AlpacaEval prompts (all 805
  by default: a shorter stage is too short to time against noise on a small CPU);
  **judge**: :func:`xl_suite.evaluation.judging.judge_pairwise` (both orders) of the first ``--judge-prompts`` of those
  answers against GPT-4o-mini's. Chunk and batch sizes keep the defaults' proportions (4 engine calls per chunk)
  and give >= 4 chunks per stage. The synthesis chunks hold 96 seeds (the default is 1024): each stage costs about
  0.1 s of ``datasets``/Arrow work per chunk whatever its size (chunk files, the schema of up to 75 columns), which a
  real chunk amortises over minutes of generation but tiny ones do not (96 seeds in chunks of 24 measured 0.82-0.97
  over four runs).
* **raw**: every request the pipeline sent, grouped by stage, replayed as one batch per stage on the same engine
  (:meth:`xl_suite.engines.vllm_engine.VLLMGenerator.generate_in_one_call`: every prompt rendered, then every
  request sent at once, with the engine to itself, as ``LLM.chat`` does). ``X_vs_raw = t_raw / t_pipeline``
  (wall clock of the whole pipeline call, chunk files and parsing included). Goal: >= 0.95.

The engine runs with prefix caching off, so no measurement profits from an earlier one. Pipeline and raw
alternate (``--repeats``) and the best time of each is kept (the ratio of the medians is printed too: on a small
CPU, the same batch varies by 5-40 % from one repeat to the next). Each pipeline and raw line also shows this
process's CPU seconds over it (the pipeline's own work and vLLM's output handling; not the engine's processes) and
the engine's stream statistics (requests sent, seconds with and without a request in the engine, and the mean
number of requests in the engine: below vLLM's ``max_num_seqs`` the engine runs a part-empty batch).

    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 python benchmarks/bench_longtail.py          # tiny model, CPU
    python benchmarks/bench_longtail.py --model /path/to/model --seeds 4096 --judge-prompts 805 --median-tokens 256

The last line is ``synthesis_vs_raw=X answers_vs_raw=Y judge_vs_raw=Z``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from xl_suite.engines.base import failure_status
from xl_suite.fingerprint import stable_hash


def alpaca_file(name: str) -> Path:
    root = Path(os.environ.get("XL_SUITE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root / "alpaca_eval" / name


def scaled_lengths(path: Path, median: int, cap: int) -> list[int]:
    """Word counts of real answers, scaled to ``median`` and capped at ``cap`` (at least 1 token)."""
    words = [len(row["output"].split()) for row in json.loads(path.read_text(encoding="utf-8"))]
    scale = median / statistics.median(words)
    return [max(1, min(cap, round(w * scale))) for w in words]


class ForcedLengths:
    """Wraps the engine: each request gets the length of its prompt's hash; records every request by stage."""

    concurrent_calls = True

    def __init__(self, inner, lengths: list[int]):
        self.inner, self.lengths = inner, lengths
        self.backend, self.model, self.revision = inner.backend, inner.model, inner.revision
        self.in_flight_rows = inner.in_flight_rows
        self.requests: dict[str, list] = {}
        self.too_long = 0
        self._lock = threading.Lock()

    def sampling_for(self, conversation, sampling):
        """The request's forced length, from its prompt's hash; nothing that could end it early."""
        n = self.lengths[int(stable_hash("len", conversation), 16) % len(self.lengths)]
        return dataclasses.replace(sampling, min_tokens=n, max_tokens=n, json_schema=None, stop=())

    def generate(self, conversations, sampling):
        samplings = [self.sampling_for(c, sampling) for c in conversations]
        # A stage is a template (its system message) and a sampling config.
        first = conversations[0][0] if conversations else {}
        stage = (first.get("content", "")[:48] if first.get("role") == "system" else "-") + sampling.to_json()
        out = self.inner.generate(conversations, samplings)
        done = [(c, s) for c, s, r in zip(conversations, samplings, out, strict=True) if failure_status(r[0]) is None]
        with self._lock:  # the baseline replays what the engine ran (not prompts refused as too long)
            self.requests.setdefault(stage, []).extend(done)
            self.too_long += len(conversations) - len(done)
        return out

    def fingerprint(self):
        return self.inner.fingerprint()

    def supports_structured_output(self):
        return False

    def close(self):
        pass


class Measured:
    """Wall seconds of a block, this process's CPU seconds (all its threads: the pipeline's own work and vLLM's
    output handling; the engine's processes are not counted) and the engine's stream statistics over it, with the
    mean number of requests in the engine (``request_seconds`` / wall)."""

    def __init__(self, engine):
        self.engine = engine

    def __enter__(self):
        self._stats, self._cpu, self._t = self.engine.stream_stats(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t
        self.cpu_seconds = time.process_time() - self._cpu
        after = self.engine.stream_stats()
        self.stream = {k: after[k] - self._stats[k] for k in after}

    def __str__(self):
        s = self.stream
        return (
            f"{self.seconds:.2f} s, client CPU {self.cpu_seconds:.2f} s; engine stream: {s['requests']:.0f} requests, "
            f"busy {s['busy_seconds']:.2f} s, idle {s['idle_seconds']:.2f} s, "
            f"mean in flight {s['request_seconds'] / max(self.seconds, 1e-9):.1f}"
        )


def raw_seconds(engine, requests: dict[str, list]) -> float:
    """One batch per stage, holding all of that stage's requests, alone on the engine."""
    t = time.perf_counter()
    for reqs in requests.values():
        engine.generate_in_one_call([c for c, _ in reqs], [s for _, s in reqs])
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder or id (default: the tiny random model, built locally)")
    p.add_argument("--seeds", type=int, default=384, help="seed passages for synthesis (4 chunks of 96 by default)")
    p.add_argument("--prompts", type=int, default=805, help="AlpacaEval prompts for answers (805: all of them)")
    p.add_argument("--judge-prompts", type=int, default=256, help="of those, how many are judged (both orders)")
    p.add_argument("--median-tokens", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=768)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--chunks", type=int, default=4, help="chunks per stage (4 engine calls each)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lengths-file", type=Path, default=None)
    p.add_argument("--parts", default="synthesis,answers,judge", help="which pipelines (answers always run)")
    args = p.parse_args(argv)

    import datasets

    from xl_suite.engines.vllm_engine import VLLMGenerator
    from xl_suite.evaluation.answers import generate_answers
    from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    datasets.disable_progress_bars()
    outputs_file = args.lengths_file or alpaca_file("gpt-4o-mini-2024-07-18_outputs.json")
    lengths = scaled_lengths(outputs_file, args.median_tokens, args.max_tokens)
    q = statistics.quantiles(lengths, n=100)
    print(
        f"lengths: {len(lengths)} real answers scaled to median {statistics.median(lengths):.0f} tokens "
        f"(p10 {q[9]:.0f}, p90 {q[89]:.0f}, p99 {q[98]:.0f}, max {max(lengths)})",
        flush=True,
    )
    if args.model is None:
        from xl_suite.engines.tiny_model import build_tiny_model

        model = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-")) / "tiny-llama", seed=0)
    else:
        model = args.model
    t = time.perf_counter()
    engine = VLLMGenerator(
        model, max_model_len=args.max_model_len, seed=0, engine_kwargs={"enable_prefix_caching": False}
    )
    print(
        f"engine: vLLM on {model} ({engine.dtype}, max_num_seqs {engine.max_num_seqs}), "
        f"started in {time.perf_counter() - t:.1f} s",
        flush=True,
    )

    gpt = json.loads(outputs_file.read_text(encoding="utf-8"))[: args.prompts]
    base = builtin_seeds()["text"][:]
    seeds = datasets.Dataset.from_dict({"text": [f"Passage {i}: {base[i % len(base)]}" for i in range(args.seeds)]})
    chunk_seeds = max(1, args.seeds // args.chunks)
    synth_config = SynthesisConfig(
        languages=("de",),
        language_filter=False,
        dedup=False,
        threshold=1.0,
        chunk_size=chunk_seeds,
        batch_size=max(1, chunk_seeds // 4),
    )
    chunk = max(1, args.prompts // args.chunks)
    benchmark = datasets.Dataset.from_dict(
        {
            "id": [f"p{i}" for i in range(len(gpt))],
            "instruction": [f"{r['instruction']}\n\nPlease respond in German." for r in gpt],
            "language": ["de"] * len(gpt),
        }
    )
    n_judged = min(args.judge_prompts, len(gpt))
    judge_chunk = max(1, n_judged // args.chunks)  # two judgments (orders) per prompt: >= 8 chunks
    judge_config = JudgeConfig(chunk_size=judge_chunk, batch_size=max(1, judge_chunk // 4))

    def run_synthesis(wrapped):
        synthesize(seeds, wrapped, synth_config, output=tempfile.mkdtemp(prefix="bench-synth-"))

    answers_holder = {}

    def run_answers(wrapped):
        answers_holder["rows"] = generate_answers(
            benchmark,
            wrapped,
            work_dir=tempfile.mkdtemp(prefix="bench-answers-"),
            chunk_size=chunk,
            batch_size=max(1, chunk // 4),
        )

    def run_judge(wrapped):
        rows = answers_holder["rows"].select(range(n_judged))
        judge_pairwise(
            rows["instruction"],
            rows["output"],
            [r["output"] for r in gpt[:n_judged]],
            rows["language"],
            judge=wrapped,
            config=judge_config,
            cache_dir=tempfile.mkdtemp(prefix="bench-judge-"),
        )

    # Warm-up (allocations, first-call costs) on a few requests.
    warm = ForcedLengths(engine, lengths)
    synthesize(seeds.select(range(4)), warm, dataclasses.replace(synth_config, chunk_size=4, batch_size=4))

    ratios = {}
    try:
        parts = (("synthesis", run_synthesis), ("answers", run_answers), ("judge", run_judge))
        for name, run in [part for part in parts if part[0] in args.parts.split(",") or part[0] == "answers"]:
            pipeline_times, raw_times = [], []
            for _ in range(args.repeats):
                wrapped = ForcedLengths(engine, lengths)
                with Measured(engine) as pipeline:
                    run(wrapped)
                pipeline_times.append(pipeline.seconds)
                with Measured(engine) as raw:
                    raw_seconds(engine, wrapped.requests)
                raw_times.append(raw.seconds)
                print(f"  {name} pipeline: {pipeline}\n  {name} raw:      {raw}", flush=True)
            n_requests = sum(len(r) for r in wrapped.requests.values())
            if wrapped.too_long:
                print(f"{name}: {wrapped.too_long} prompts too long for the context (rows marked too_long)")
            tokens = sum(s.max_tokens * s.n for reqs in wrapped.requests.values() for _, s in reqs)
            ratios[name] = min(raw_times) / min(pipeline_times)
            print(
                f"{name}: {n_requests} requests in {len(wrapped.requests)} stage(s), {tokens} forced completion "
                f"tokens; pipeline best {min(pipeline_times):.2f} s {[round(x, 2) for x in pipeline_times]}, "
                f"raw (one batch per stage) best {min(raw_times):.2f} s {[round(x, 2) for x in raw_times]}; "
                f"ratio {ratios[name]:.3f} (of the medians: "
                f"{statistics.median(raw_times) / statistics.median(pipeline_times):.3f})",
                flush=True,
            )
    finally:
        engine.close()
    print(" ".join(f"{k}_vs_raw={v:.3f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
