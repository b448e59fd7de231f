"""What a synthesis run will ask of its engines before it starts (``xl-suite synthesize --dry-run``).

Upper bounds, stage by stage, for the seeds the run reads: every seed is assumed to pass every filter, and every
completion to use all of ``max_tokens``. Prompt tokens come from the stage templates rendered with the seed
passages (earlier stages' outputs stand in at ``max_tokens`` each), at :data:`~xl_suite.costs.CHARS_PER_TOKEN`
characters per token. Nothing is sent, no engine starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from xl_suite.costs import CHARS_PER_TOKEN, CostEstimate, estimate_prompt_tokens


__all__ = ["estimate_synthesis", "seeds_used", "seeds_note"]


def seeds_used(config, n_seeds: int) -> int:
    """How many of ``n_seeds`` seed passages a run of ``config`` reads at most.

    >>> from xl_suite.synthesis.config import SynthesisConfig
    >>> seeds_used(SynthesisConfig(languages=("mt",), num_examples=10), 1000)
    40
    >>> seeds_used(SynthesisConfig(languages=("mt",), max_seeds=8), 1000)
    8
    """
    if config.max_seeds is not None:
        return min(n_seeds, config.max_seeds)
    if config.num_examples is not None:
        return min(n_seeds, math.ceil(config.num_examples * config.oversample))
    return n_seeds


def estimate_synthesis(
    config,
    seed_texts: Sequence[str],
    *,
    model: str,
    scorer_model: str | None = None,
    price: tuple[float, float] | None = None,
    scorer_price: tuple[float, float] | None = None,
    local: bool = False,
    scorer_local: bool | None = None,
) -> list[CostEstimate]:
    """One :class:`~xl_suite.costs.CostEstimate` per engine stage of a synthesis run (upper bounds; see the module).

    Args:
        config: the :class:`~xl_suite.synthesis.SynthesisConfig`.
        seed_texts: the seed passages, in order (the first ones the run reads are used).
        model: the generator model; ``scorer_model`` the scorer's (default: the generator).
        price: USD per million (input, output) tokens of the generator (None: unknown or local);
            ``scorer_price`` the scorer's.
        local: the generator runs on a local engine (engine-hours, not dollars); ``scorer_local`` the scorer
            (default: as the generator).
    """
    from xl_suite.languages import get_language
    from xl_suite.prompting import load_template
    from xl_suite.synthesis.config import default_stages

    plain = dataclasses.replace(config, decontaminate=False)  # decontamination sends no request
    stages = [s for s in default_stages(plain) if s.template is not None]
    n = seeds_used(config, len(seed_texts))
    texts = list(seed_texts[:n])
    langs = [get_language(c) for c in config.languages]
    filler = "x" * int(config.max_tokens * CHARS_PER_TOKEN)
    out = []
    for stage in stages:
        template = load_template(stage.template)
        names = getattr(stage.function, "template_variables", ())
        per_language = "language" in names
        candidates = config.n_candidates if stage.name == "judge" else 1
        completions = stage.sampling.n if stage.sampling is not None else 1
        values = {k: filler for k in names if k not in ("passage", "language")}
        values.update({k: v for k, v in _fixed_values(stage.params.get("criteria") or {}).items() if k in names})
        prompts = 0
        for text in texts:
            for lang in langs if per_language else [None]:
                kw = dict(values)
                if "passage" in names:
                    kw["passage"] = text
                if lang is not None:
                    kw["language"] = lang
                prompts += estimate_prompt_tokens([template.render(**kw)]) * candidates
        requests = len(texts) * (len(langs) if per_language else 1) * candidates
        scoring = stage.engine == "scorer"
        who = (scorer_model or model) if scoring else model
        detail = f"{len(texts)} seeds" + (f" x {len(langs)} languages" if per_language else "")
        detail += f" x {candidates} candidates" if candidates > 1 else ""
        detail += f", {completions} completions each" if completions > 1 else ""
        out.append(
            CostEstimate(
                stage=f"synthesis {stage.name}",
                model=who,
                requests=requests,
                prompt_tokens=prompts,
                completion_tokens=requests * config.max_tokens * completions,
                price=(scorer_price if scorer_model else price) if scoring else price,
                detail=detail,
                local=(local if scorer_local is None or not scorer_model else scorer_local) if scoring else local,
            )
        )
    return out


def _fixed_values(criteria) -> dict:
    from xl_suite.scoring import SCORE_SCALE, criteria_list

    return {"criteria": criteria_list(criteria), "scale_min": SCORE_SCALE[0], "scale_max": SCORE_SCALE[1]}


def seeds_note(config, n_seeds: int) -> str | None:
    """A note when the seeds are too few for ``num_examples`` pairs per language (the run would fall short).

    >>> from xl_suite.synthesis.config import SynthesisConfig
    >>> print(seeds_note(SynthesisConfig(languages=("mt",), num_examples=8000), 40))
    note: 40 seed passages for 8,000 pairs per language: the run reads up to 32,000 (num_examples x oversample 4.0) and keeps at most one pair per seed and language; expect far fewer than 8,000. Pass more passages with --seeds.
    >>> seeds_note(SynthesisConfig(languages=("mt",), num_examples=5), 40) is None
    True
    """
    if config.num_examples is None or config.max_seeds is not None:
        return None
    wanted = math.ceil(config.num_examples * config.oversample)
    if n_seeds >= wanted:
        return None
    return (
        f"note: {n_seeds:,} seed passages for {config.num_examples:,} pairs per language: the run reads up to "
        f"{wanted:,} (num_examples x oversample {config.oversample}) and keeps at most one pair per seed and "
        f"language; expect far fewer than {config.num_examples:,}. Pass more passages with --seeds."
    )
