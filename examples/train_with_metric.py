"""Track the XL-AlpacaEval metric inside a training loop.

A short, training-style script: it fine-tunes a causal LM on a few (English instruction -> target-language answer)
pairs with a plain PyTorch loop and, after every epoch, answers held-out prompts and scores the answers with
``evaluate.load("evaluate_metrics/xl_alpacaeval", "fidelity")``: the share of answers written in the requested
language, offline and without a judge, cheap enough to run every epoch. With ``--judge-backend/--judge-model`` the
last epoch is also scored by a pairwise judge against reference answers (win rate, CI, rubric).

By default it trains the tiny random model of ``xl_suite.engines.tiny_model`` (a meaningless stand-in built locally in a
second), so the numbers only show that the plumbing works. Point ``--model`` at a real checkpoint for real numbers.

    python examples/train_with_metric.py --epochs 3
    python examples/train_with_metric.py --model Qwen/Qwen2.5-0.5B-Instruct --epochs 2 \\
        --judge-backend vllm --judge-model Qwen/Qwen2.5-7B-Instruct

Each epoch prints one JSON line: {"epoch", "loss", "language_fidelity", "line_pass_rate", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
METRIC = str(REPO / "evaluate_metrics" / "xl_alpacaeval")

# A handful of cross-lingual pairs in the XL-Instruct shape (English instruction, answer in the target language).
TRAIN = [
    (
        "Describe your favourite season. Please respond in German.",
        "Mein Lieblingsjahreszeit ist der Herbst, wenn die Blätter bunt werden und die Luft kühl ist.",
        "de",
    ),
    (
        "Give two tips for learning a language. Please respond in German.",
        "Sprich jeden Tag ein wenig und lies Bücher, die dich wirklich interessieren.",
        "de",
    ),
    (
        "What is a good breakfast? Please respond in Maltese.",
        "Kolazzjon tajjeb huwa ħobż frisk biż-żejt taż-żebbuġa, tadam u kafè sħun.",
        "mt",
    ),
    (
        "Describe the sea in summer. Please respond in Maltese.",
        "Fis-sajf il-baħar ikun kalm u sħun, u n-nies jgħumu sa tard filgħaxija.",
        "mt",
    ),
]
EVAL = [
    (
        "Name a famous city and say why it is famous. Please respond in German.",
        "de",
        "Paris ist berühmt für den Eiffelturm und seine Museen.",
    ),
    (
        "Explain why sleep matters. Please respond in Maltese.",
        "mt",
        "L-irqad huwa importanti għax il-ġisem u l-moħħ jistrieħu u jirkupraw.",
    ),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder or Hub id (default: build the tiny random model)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--judge-backend", default=None, help="score the last epoch with this judge backend too")
    p.add_argument("--judge-model", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import evaluate
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(args.seed)
    model_dir = args.model
    if model_dir is None:
        from xl_suite.engines.tiny_model import build_tiny_model

        model_dir = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="tiny-")) / "tiny-llama", seed=args.seed))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    fidelity = evaluate.load(METRIC, "fidelity")

    def chat(instruction, answer=None):
        messages = [{"role": "user", "content": instruction}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None)

    def answer_all():
        model.eval()
        outputs = []
        with torch.no_grad():
            for instruction, _, _ in EVAL:
                enc = tokenizer(chat(instruction), return_tensors="pt", add_special_tokens=False)
                gen = model.generate(
                    **enc, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
                outputs.append(tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        model.train()
        return outputs

    predictions = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for instruction, answer, _ in TRAIN:
            enc = tokenizer(chat(instruction, answer), return_tensors="pt", add_special_tokens=False)
            loss = model(**enc, labels=enc["input_ids"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        predictions = answer_all()
        scores = fidelity.compute(predictions=predictions, languages=[lang for _, lang, _ in EVAL])
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "loss": round(sum(losses) / len(losses), 4),
                    "language_fidelity": scores["language_fidelity"],
                    "line_pass_rate": scores["line_pass_rate"],
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            ),
            flush=True,
        )

    if args.judge_model:
        metric = evaluate.load(
            METRIC, "local-vllm", judge_model=args.judge_model, judge_backend=args.judge_backend or "vllm"
        )
        try:
            full = metric.compute(
                predictions=predictions,
                references=[ref for _, _, ref in EVAL],
                instructions=[ins for ins, _, _ in EVAL],
                languages=[lang for _, lang, _ in EVAL],
                n_resamples=200,
                lc_method="mle",
            )
        finally:
            metric.close()
        print(
            json.dumps(
                {
                    "final": True,
                    "win_rate": full["win_rate"],
                    "parse_rate": full["parse_rate"],
                    "language_fidelity": full["language_fidelity"],
                },
                default=str,
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
