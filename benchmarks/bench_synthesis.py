"""Benchmark of the synthesis pipeline (not a test).

Throughput, in one process, on one engine, with the same prompts and sampling settings:

* **pipeline**: :func:`xl_suite.synthesis.synthesize` on ``--seeds-rows`` seed passages (1 language), everything
  included (template rendering, ``Dataset.map``, chunk files, parsing, language identification, output files);
* **raw**: the prompts the pipeline sent, replayed stage by stage with ``generator.generate`` on all of a stage's
  prompts at once (for vLLM: one call per stage, its requests all sent at once);
* **per row**: the same prompts through ``Dataset.map(batched=False)``, one engine call per prompt.

Because the prompts and outputs are the same, throughput ratios are time ratios: ``ratio_vs_raw = t_raw /
t_pipeline`` (goal >= 0.95) and ``speedup_vs_per_row = t_per_row / t_pipeline`` (goal >= 20). The vLLM engine runs
with prefix caching off, so no measurement profits from an earlier one having cached the same prompts; each
measurement is repeated (``--repeats``, pipeline and raw interleaved) and the best time is kept; the time the
pipeline spends outside engine calls is printed too (it does not depend on how busy the engine's core is).

Memory: peak RSS of the whole pipeline with the fast fake engine on 10k and 100k seed rows (read from Parquet with
``datasets``), each in a fresh subprocess; the ratio's goal is <= 1.3.

    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 python benchmarks/bench_synthesis.py            # tiny model
    python benchmarks/bench_synthesis.py --model /path/to/model --seeds-rows 512 --max-tokens 256

The last line is ``ratio_vs_raw=X speedup_vs_per_row=Y``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _seed_rows(n: int):
    """``n`` distinct passages: the built-in sample cycled, each numbered first (so instructions differ too)."""
    import datasets

    from xl_suite.synthesis.seeds import builtin_seeds

    base = builtin_seeds()["text"][:]
    return datasets.Dataset.from_dict({"text": [f"Passage {i}: {base[i % len(base)]}" for i in range(n)]})


class Recording:
    """Wraps an engine; records every call (conversations, sampling) so they can be replayed."""

    def __init__(self, inner):
        self.inner = inner
        self.backend, self.model, self.revision = inner.backend, inner.model, inner.revision
        self.calls: list[tuple[list, object]] = []
        self.seconds = 0.0

    def generate(self, conversations, sampling):
        self.calls.append((list(conversations), sampling))
        t = time.perf_counter()
        try:
            return self.inner.generate(conversations, sampling)
        finally:
            self.seconds += time.perf_counter() - t

    def fingerprint(self):
        return self.inner.fingerprint()

    def supports_structured_output(self):
        return self.inner.supports_structured_output()

    def close(self):
        pass


def _config(args, seeds_rows: int):
    from xl_suite.synthesis import SynthesisConfig

    # One chunk and one engine call per stage: the pipeline gives the engine the whole stage at once, as raw does.
    return SynthesisConfig(
        languages=("mt",),
        max_tokens=args.max_tokens,
        threshold=1.0,
        language_filter=False,
        dedup=False,
        batch_size=max(seeds_rows * 4, 1),
        chunk_size=max(seeds_rows * 4, 1),
    )


def throughput(args) -> tuple[float, float]:
    import datasets

    from xl_suite.synthesis import synthesize

    datasets.disable_progress_bars()
    if args.backend == "fake":
        from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder

        engine = FakeGenerator(FakeSynthesisResponder())
    else:
        from xl_suite.engines.tiny_model import build_tiny_model
        from xl_suite.engines.vllm_engine import VLLMGenerator

        model = args.model or build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-")) / "tiny-llama", seed=0)
        t = time.perf_counter()
        engine = VLLMGenerator(
            model,
            max_model_len=2048,
            seed=0,
            engine_kwargs={"enable_prefix_caching": False, "enable_chunked_prefill": False},
        )
        print(
            f"engine: vLLM on {model} (dtype {engine.dtype}), started in {time.perf_counter() - t:.1f} s", flush=True
        )
    try:
        seeds = _seed_rows(args.seeds_rows)
        config = _config(args, args.seeds_rows)
        warm = Recording(engine)
        synthesize(seeds.select(range(min(8, seeds.num_rows))), warm, config)  # warm-up (compile, allocations)

        # Interleaved, so that a slower or busier moment of the machine hits both sides alike.
        pipeline_times, engine_times, raw_times, calls = [], [], [], None
        for _ in range(args.repeats):
            rec = Recording(engine)
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                result = synthesize(seeds, rec, config, output=out)
                pipeline_times.append(time.perf_counter() - t)
            calls = rec.calls
            engine_times.append(rec.seconds)
            t = time.perf_counter()
            for conversations, sampling in calls:
                engine.generate(conversations, sampling)
            raw_times.append(time.perf_counter() - t)
        prompts = sum(len(c) for c, _ in calls)
        generated = result.summary["generated"]
        best = min(pipeline_times)
        print(
            f"pipeline: {args.seeds_rows} seeds -> {prompts} prompts in {len(calls)} engine calls, "
            f"{generated['completion_tokens']} completion tokens; best of {args.repeats}: "
            f"{best:.2f} s ({prompts / best:.1f} prompts/s); runs {[round(x, 2) for x in pipeline_times]}",
            flush=True,
        )
        overhead = [p - e for p, e in zip(pipeline_times, engine_times, strict=True)]
        print(
            f"pipeline time outside the engine calls: {min(overhead):.2f} s "
            f"({100 * min(overhead) / best:.1f}% of the pipeline)",
            flush=True,
        )
        print(
            f"raw generate, all of a stage's prompts at once: {min(raw_times):.2f} s "
            f"({prompts / min(raw_times):.1f} prompts/s); runs {[round(x, 2) for x in raw_times]}",
            flush=True,
        )

        t = time.perf_counter()
        for conversations, sampling in calls:
            rows = datasets.Dataset.from_dict({"i": list(range(len(conversations)))})
            rows.map(
                lambda row, convs=conversations, s=sampling: {
                    "text": engine.generate([convs[row["i"]]], s)[0][0].text
                },
                batched=False,
                keep_in_memory=True,
                load_from_cache_file=False,
                new_fingerprint=f"per-row-{time.time_ns()}",
            )
        per_row = time.perf_counter() - t
        print(
            f"per-row map(batched=False), one engine call per prompt: {per_row:.2f} s "
            f"({prompts / per_row:.1f} prompts/s)",
            flush=True,
        )
    finally:
        engine.close()
    return min(raw_times) / best, per_row / best


def memory_child(rows: int) -> None:
    """Run the pipeline with the fake engine on ``rows`` seeds read from Parquet; print the peak RSS (MiB)."""
    import datasets

    from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import load_seeds

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "cache")
        datasets.config.HF_DATASETS_CACHE = Path(tmp) / "cache"
        path = Path(tmp) / "seeds.parquet"
        _seed_rows(rows).to_parquet(str(path))
        seeds = load_seeds(str(path))
        config = SynthesisConfig(languages=("mt",), n_candidates=3, batch_size=256, chunk_size=2048)
        t = time.perf_counter()
        result = synthesize(seeds, FakeGenerator(FakeSynthesisResponder()), config, output=str(Path(tmp) / "out"))
        seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": rows,
                "peak_rss_mib": round(peak, 1),
                "seconds": round(seconds, 1),
                "produced": result.summary["languages"]["mt"]["produced"],
            }
        )
    )


def memory(sizes: list[int]) -> float:
    peaks = {}
    for rows in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(rows)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        info = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[rows] = info["peak_rss_mib"]
        print(
            f"memory: {rows} seed rows -> peak RSS {info['peak_rss_mib']:.0f} MiB "
            f"({info['seconds']:.0f} s, {info['produced']} pairs)",
            flush=True,
        )
    ratio = peaks[sizes[-1]] / peaks[sizes[0]]
    print(f"memory ratio {sizes[-1]} / {sizes[0]} rows: {ratio:.2f} (goal <= 1.3)", flush=True)
    return ratio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the tiny random model, built locally)")
    p.add_argument("--backend", choices=["vllm", "fake"], default="vllm")
    p.add_argument("--seeds-rows", type=int, default=128, help="seed passages for the throughput part")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-rows", default="10000,100000", help="seed rows of the memory part (comma-separated)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return 0
    if not args.skip_memory:
        memory([int(x) for x in args.memory_rows.split(",")])
    ratio, speedup = throughput(args)
    print(f"ratio_vs_raw={ratio:.3f} speedup_vs_per_row={speedup:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
