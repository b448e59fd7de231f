"""Throughput of xl_suite.fidelity.language_fidelity on one core.

Builds N responses (default 20,000) from the hand-written sentences in tests/data/langid_sentences.json: 1 to 3
lines each, 10% in a wrong language, every line made unique with a reference number so that the identifier's
per-call cache does not flatter the figure. Times one ``language_fidelity`` call after the model has loaded.

    OMP_NUM_THREADS=1 python benchmarks/bench_fidelity.py [--n 20000] [--compare]

``--compare`` also times py3langid's own one-text-at-a-time ``classify`` (``LanguageIdentifier(batched=False)``)
on the same responses. The last line printed is ``responses_per_s=N``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


SENTENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "langid_sentences.json"


def build_responses(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` synthetic responses and their target languages."""
    sentences: dict[str, list[str]] = json.loads(SENTENCES.read_text(encoding="utf-8"))["sentences"]
    codes = sorted(sentences)
    rng = random.Random(seed)
    responses, targets, ref = [], [], 0
    for _ in range(n):
        target = rng.choice(codes)
        written = target if rng.random() >= 0.1 else rng.choice([c for c in codes if c != target])
        lines = []
        for _ in range(rng.randint(1, 3)):
            ref += 1
            lines.append(f"{rng.choice(sentences[written])} [{ref}]")
        responses.append("\n".join(lines))
        targets.append(target)
    return responses, targets


def _time(responses: list[str], targets: list[str], identifier) -> tuple[float, dict]:
    from xl_suite.fidelity import language_fidelity

    identifier.identify(["warm-up: load the model before timing"])
    start = time.perf_counter()
    result = language_fidelity(responses, targets, identifier=identifier)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of responses")
    parser.add_argument("--compare", action="store_true", help="also time py3langid's per-text classify")
    args = parser.parse_args()

    from xl_suite.fidelity import LanguageIdentifier

    responses, targets = build_responses(args.n)
    chars = sum(map(len, responses)) / len(responses)
    lines = sum(r.count("\n") + 1 for r in responses) / len(responses)
    print(f"responses={len(responses)} mean_chars={chars:.0f} mean_lines={lines:.2f}")
    if args.compare:
        seconds, _ = _time(responses, targets, LanguageIdentifier(batched=False))
        print(f"per_text_classify: {seconds:.2f} s, {len(responses) / seconds:.0f} responses/s")
    seconds, result = _time(responses, targets, LanguageIdentifier())
    print(
        f"batched: {seconds:.2f} s; language_fidelity={result['language_fidelity']:.1f}% "
        f"line_pass_rate={result['line_pass_rate']:.1f}%"
    )
    print(f"responses_per_s={len(responses) / seconds:.0f}")


if __name__ == "__main__":
    main()
