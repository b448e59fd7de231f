"""GPU check (not a test): overhead of the batched, chunked ``Dataset.map`` stage at GPU speed.

On a GPU machine without vLLM (the lent device has none and cannot fetch it), this measures the transformers
backend on a randomly initialised ~1B-parameter Llama (bf16), built locally around the tiny model's tokenizer:

* **raw**: ``generator.generate`` on all prompts, in the same batches the stage uses;
* **stage**: :func:`xl_suite.evaluation.generate_answers` (``run_stage``: chunked ``Dataset.map(batched=True)``,
  template rendering, provenance columns, chunk files) on the same prompts and settings;
* **per row**: ``Dataset.map(batched=False)`` with one engine call per prompt, on the first ``--per-row-prompts``
  prompts (throughput compared per token).

Greedy decoding with ``min_tokens == max_tokens`` makes both produce the same number of tokens. The last line is
``ratio_vs_raw=X speedup_vs_per_row=Y`` (stage throughput / raw throughput, goal >= 0.95; stage throughput /
per-row throughput, goal >= 20).

    python benchmarks/bench_gpu_answers.py --prompts 512 --max-tokens 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A random Llama of the given size around the tiny model's tokenizer (no download)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from xl_suite.engines.tiny_model import build_tiny_model

    tiny = build_tiny_model(out / "tiny")
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        head_dim=128,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    path = out / f"llama-{hidden}x{layers}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e9:.2f}B parameters, bf16 -> {path}")
    return path


def main() -> None:
    import datasets

    from xl_suite.engines.base import SamplingConfig
    from xl_suite.engines.hf_engine import TransformersGenerator
    from xl_suite.evaluation import generate_answers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--device", default="cuda")
    p.add_argument("--per-row-prompts", type=int, default=64)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="xl-gpu-"))
    model = build_model(work, args.hidden, args.layers)
    gen = TransformersGenerator(str(model), dtype="bfloat16", device=args.device, batch_size=args.batch_size)
    prompts = [f"Question {i}: explain topic number {i} in two sentences, please." for i in range(args.prompts)]
    ds = datasets.Dataset.from_dict(
        {"id": [str(i) for i in range(len(prompts))], "language": ["de"] * len(prompts), "instruction": prompts}
    )
    sampling = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens)
    convs = [[{"role": "user", "content": q}] for q in prompts]
    gen.generate(convs[: args.batch_size], sampling)  # warm-up
    results = {}
    for rep in range(2):
        t = time.perf_counter()
        for i in range(0, len(convs), args.batch_size):
            gen.generate(convs[i : i + args.batch_size], sampling)
        raw = time.perf_counter() - t
        t = time.perf_counter()
        out = generate_answers(
            ds, gen, sampling=sampling, work_dir=str(work / f"stage-{rep}"), batch_size=args.batch_size, chunk_size=256
        )
        stage = time.perf_counter() - t
        assert out.num_rows == len(prompts)
        results[rep] = (raw, stage)
        tokens = len(prompts) * args.max_tokens
        print(
            f"rep {rep}: raw {raw:.2f} s ({tokens / raw:.0f} tok/s), stage {stage:.2f} s ({tokens / stage:.0f} tok/s)"
        )
    raw, stage = min(r for r, _ in results.values()), min(s for _, s in results.values())

    def one(row):
        gen.generate([[{"role": "user", "content": row["instruction"]}]], sampling)
        return {}

    few = ds.select(range(min(args.per_row_prompts, ds.num_rows)))
    t = time.perf_counter()
    few.map(one, batched=False, new_fingerprint="per-row", load_from_cache_file=False)
    per_row = (time.perf_counter() - t) * ds.num_rows / few.num_rows  # same per-prompt cost, all prompts
    print(f"per row: {few.num_rows} prompts in {per_row * few.num_rows / ds.num_rows:.2f} s")
    print(f"ratio_vs_raw={raw / stage:.3f} speedup_vs_per_row={per_row / stage:.1f}")


if __name__ == "__main__":
    main()
