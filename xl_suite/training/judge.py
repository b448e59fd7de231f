"""The XL-AlpacaEval pairwise judge in the two shapes TRL consumes: a pairwise judge and a reward function.

**TRL's API moved (checked against trl 1.16.0, the version the ``train`` extra installs).** Up to TRL 0.2x a
pairwise judge was a ``trl.BasePairwiseJudge`` (later ``trl.experimental.judges.BasePairwiseJudge``) with
``judge(prompts, completions, shuffle_order=True) -> list[int]``, used by ``WinRateCallback`` and
``OnlineDPOTrainer(judge=...)``. TRL moved the judges to ``trl.experimental`` in late 2025 (huggingface/trl#4400) and
has since removed them: trl 1.16 has no judge classes and no ``WinRateCallback``, and its online trainers
(``GRPOTrainer``, ``RLOOTrainer``, ``trl.experimental.online_dpo.OnlineDPOTrainer``) take **reward functions**:
``reward_func(prompts, completions, **columns) -> list[float | None]``, where ``columns`` are the training dataset's
other columns. So this module offers both:

* :class:`XlAlpacaEvalRewardFunc`: the current API. The reward of a completion is the XL-AlpacaEval preference
  P(completion beats the reference answer), judged in the prompt's target language. The dataset supplies the
  ``reference`` and ``language`` columns (names configurable). An unparseable verdict gives ``None`` (TRL turns it
  into NaN and leaves it out of that function's mean); it never becomes a made-up number.
* :class:`XlAlpacaEvalPairwiseJudge`: the pairwise-judge protocol of TRL < 1.0 (``WinRateCallback``, the old
  ``OnlineDPOTrainer(judge=...)``) and of any code that calls ``judge.judge(prompts, completions)``. When the
  installed TRL still has ``BasePairwiseJudge``, the class is registered as its virtual subclass, so
  ``isinstance`` checks pass.

Both reuse :func:`xl_suite.evaluation.judging.judge_pairwise`: the same templates, parser, soft preferences, both
presentation orders by default, the annotation cache (``cache_dir``) and the engine seam (any
:class:`~xl_suite.engines.base.Generator`, or an :class:`~xl_suite.engines.spec.EngineSpec` started on first use).

**Ties.** The judge's verdict is A, B or tie; a tie is worth 0.5 (alpaca_eval's rule), and with ``order="both"``
the two orders' preferences are averaged, so 0.5 also arises from "A in one order, B in the other" (position bias).
``return_scores=True`` (TRL's soft judge) returns that preference unchanged. For an index, a preference of exactly
0.5 is resolved by ``tie_break``: ``"random"`` (default) draws 0 or 1 from a hash of the prompt and both completions
(reproducible, no position preference, so a tie counts as half a win on average), ``"first"``/``"second"`` pick
that completion, ``"invalid"`` returns -1 like a failed judgment.

**Failures.** An unparseable verdict (in every order judged) gives -1 (TRL's "the judge failed" value) or NaN with
``return_scores=True``; the count is logged and kept in :attr:`XlAlpacaEvalPairwiseJudge.last_ledger`.

Importing this module does not import TRL; :func:`trl_pairwise_judge_base` does, on demand.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from xl_suite.errors import InvalidArgumentError, MissingDependencyError


logger = logging.getLogger(__name__)

__all__ = [
    "TIE_BREAKS",
    "XlAlpacaEvalPairwiseJudge",
    "XlAlpacaEvalRewardFunc",
    "is_trl_available",
    "require_trl",
    "trl_pairwise_judge_base",
    "prompt_text",
    "completion_text",
]

TieBreak = Literal["random", "first", "second", "invalid"]
#: How a preference of exactly 0.5 becomes an index (see the module docstring).
TIE_BREAKS: tuple[str, ...] = ("random", "first", "second", "invalid")

_INSTALL_HINT = "pip install 'xl-suite[train]'"


def is_trl_available() -> bool:
    """True when ``trl`` is installed; does not import it."""
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def require_trl():
    """Import and return ``trl``, or raise :class:`~xl_suite.errors.MissingDependencyError` naming the extra."""
    try:
        import trl
    except ImportError as e:
        raise MissingDependencyError(f"TRL is not installed (needed for fine-tuning): {_INSTALL_HINT}.") from e
    return trl


def trl_pairwise_judge_base() -> type | None:
    """TRL's ``BasePairwiseJudge`` where the installed TRL still has it (TRL < 1.0), else None.

    Looks in ``trl.experimental.judges`` (2025-26) and in ``trl`` (older releases).
    """
    import importlib
    import warnings

    require_trl()
    for module in ("trl.experimental.judges", "trl"):
        try:
            with warnings.catch_warnings():  # TRLExperimentalWarning: we only look the class up
                warnings.simplefilter("ignore")
                base = getattr(importlib.import_module(module), "BasePairwiseJudge", None)
        except ImportError:
            continue
        if base is not None:
            return base
    return None


def _missing(value, what: str) -> None:
    """One clear error for a value that is neither a string nor a list of messages (None, NaN, a number...)."""
    if isinstance(value, str) or (
        isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and value is not None
    ):
        return
    hint = (
        " (NaN: the dataset row has no value there; drop or fill such rows)"
        if isinstance(value, float) and math.isnan(value)
        else " (the dataset row has no value there; drop or fill such rows)"
        if value is None
        else ""
    )
    raise InvalidArgumentError(f"{what} is {value!r}, not a string or a list of chat messages{hint}.")


def prompt_text(prompt: str | Sequence[Mapping[str, Any]], what: str = "prompt") -> str:
    """The instruction a TRL prompt holds: the string itself, or the last user turn of a conversational prompt.

    >>> prompt_text("Write a haiku.")
    'Write a haiku.'
    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hallo?"}])
    'Hallo?'
    >>> prompt_text([{"role": "assistant", "content": "x"}])
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: A conversational prompt has no user turn: [{'role': 'assistant', 'content': 'x'}]
    >>> prompt_text(None, "prompts[2]")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: prompts[2] is None, not a string or a list of chat messages (the dataset row has no value there; drop or fill such rows).
    """
    _missing(prompt, what)
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        raise InvalidArgumentError(f"A conversational prompt has no user turn: {list(prompt)!r}")
    return users[-1]


def completion_text(completion: str | Sequence[Mapping[str, Any]], what: str = "completion") -> str:
    """The text of a TRL completion: the string itself, or the content of a conversational completion's messages.

    >>> completion_text("Bonjour"), completion_text([{"role": "assistant", "content": "Hallo"}])
    ('Bonjour', 'Hallo')
    >>> completion_text(float("nan"), "reference[0]")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: reference[0] is nan, not a string or a list of chat messages (NaN: the dataset row has no value there; drop or fill such rows).
    """
    _missing(completion, what)
    if isinstance(completion, str):
        return completion
    parts = []
    for m in completion:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise InvalidArgumentError(f"A conversational completion must hold {{'role', 'content'}} messages: {m!r}")
        parts.append(m["content"])
    return "".join(parts)


def _as_generator(engine):
    """A Generator from a Generator or an EngineSpec (started lazily, on the first judgment)."""
    from xl_suite.engines.spec import EngineSpec

    if isinstance(engine, EngineSpec):
        return engine.lazy()
    if not callable(getattr(engine, "generate", None)) or not callable(getattr(engine, "fingerprint", None)):
        raise InvalidArgumentError(
            f"engine must be an xl_suite Generator (e.g. build_generator('vllm', MODEL)) or an EngineSpec, "
            f"got {type(engine).__name__}."
        )
    return engine


class _JudgeBase:
    """Engine, judge config, cache folder and language lookup shared by the judge and the reward function."""

    def __init__(self, engine, *, config=None, cache_dir: str | None = None):
        from xl_suite.evaluation.judging import JudgeConfig

        self.engine = _as_generator(engine)
        self.config = config or JudgeConfig(rubric=False)
        if not isinstance(self.config, JudgeConfig):
            raise InvalidArgumentError(f"config must be a JudgeConfig, got {type(self.config).__name__}.")
        self.cache_dir = cache_dir
        self.last_ledger: dict[str, Any] = {}
        self.last_judgments = None

    def _judge(self, instructions, firsts, seconds, languages):
        from xl_suite.evaluation.judging import judge_pairwise

        result = judge_pairwise(
            instructions, firsts, seconds, languages, judge=self.engine, config=self.config, cache_dir=self.cache_dir
        )
        self.last_judgments = result
        self.last_ledger = dict(result.ledger)
        n_failed = sum(p is None for p in result.preferences)
        self.last_ledger["unparsed_items"] = n_failed
        if n_failed:
            logger.warning(
                "XL-AlpacaEval judge %s: %d of %d items have no parsed verdict",
                self.engine.model,
                n_failed,
                len(firsts),
            )
        return result.preferences

    def close(self) -> None:
        """Close the judge engine (the one passed in, or the one started from an EngineSpec)."""
        self.engine.close()


class XlAlpacaEvalPairwiseJudge(_JudgeBase):
    """TRL's pairwise-judge protocol over the XL-AlpacaEval judge (see the module docstring for TRL versions).

    Args:
        engine: the judge's :class:`~xl_suite.engines.base.Generator`, or an
            :class:`~xl_suite.engines.spec.EngineSpec` (the engine then starts on the first judgment).
        language: the target language: one code for every prompt (``"de"``), a mapping prompt text -> code, or a
            callable ``prompt -> code``. The judge prompt names it, and an answer in another language loses.
        config: :class:`~xl_suite.evaluation.judging.JudgeConfig` (default: both orders, greedy, no rubric).
        cache_dir: annotation cache folder (a repeated pair is not judged again); None judges in memory.
        tie_break: how a preference of exactly 0.5 becomes an index: ``"random"`` (default, content-seeded),
            ``"first"``, ``"second"`` or ``"invalid"`` (-1).

    >>> from xl_suite import FakeGenerator
    >>> judge = XlAlpacaEvalPairwiseJudge(FakeGenerator(lambda m, i, s: '{"winner": "A"}'), language="de")
    >>> judge.judge(["Wie spät ist es?"], [["Es ist drei Uhr.", "Drei."]])  # A in both orders: a tie
    [1]
    >>> judge.judge(["Wie spät ist es?"], [["Es ist drei Uhr.", "Drei."]], return_scores=True)
    [0.5]
    """

    def __init__(
        self,
        engine,
        *,
        language: str | Mapping[str, str] | Callable[[Any], str],
        config=None,
        cache_dir: str | None = None,
        tie_break: TieBreak = "random",
    ):
        super().__init__(engine, config=config, cache_dir=cache_dir)
        if tie_break not in TIE_BREAKS:
            raise InvalidArgumentError(f"tie_break={tie_break!r} is not one of {list(TIE_BREAKS)}.")
        if language is None:
            raise InvalidArgumentError("language is required: a code ('de'), a prompt -> code mapping or a callable.")
        if isinstance(language, str):
            from xl_suite.languages import get_language

            get_language(language)  # an unknown code fails here, not in the middle of training
        self.language = language
        self.tie_break = tie_break
        if is_trl_available():
            base = trl_pairwise_judge_base()
            if base is not None and not isinstance(self, base):
                base.register(type(self))

    def languages_for(self, prompts: Sequence) -> list[str]:
        """The target language of each prompt, from ``language``."""
        if isinstance(self.language, str):
            return [self.language] * len(prompts)
        out = []
        for p in prompts:
            if isinstance(self.language, Mapping):
                key = prompt_text(p)
                if key not in self.language:
                    raise InvalidArgumentError(
                        f"No target language for the prompt {key[:80]!r}: add it to the judge's language mapping "
                        "(or pass language='<code>' for all prompts)."
                    )
                out.append(self.language[key])
            else:
                out.append(self.language(p))
        return out

    def judge(
        self,
        prompts: Sequence,
        completions: Sequence[Sequence],
        shuffle_order: bool = True,
        return_scores: bool = False,
    ) -> list[int] | list[float]:
        """Which completion of each pair is better: TRL's ``BasePairwiseJudge.judge``.

        Args:
            prompts: prompt strings, or conversational prompts (the last user turn is the instruction).
            completions: one pair ``[first, second]`` per prompt (strings or conversational completions).
            shuffle_order: TRL's flag against position bias. With ``order="both"`` (default) each pair is judged in
                both orders, which removes the need to shuffle, so the flag changes nothing. With
                ``order="random"`` the order is drawn from a hash of the texts (reproducible); passing False then
                raises, because this judge has no "as given" order.
            return_scores: return P(first completion is better) instead of indices (TRL's soft judge).

        Returns:
            Per prompt: 0 (first better), 1 (second better) or -1 (no verdict could be parsed); with
            ``return_scores``, the probability (NaN when unparsed).
        """
        if len(prompts) != len(completions):
            raise InvalidArgumentError(f"{len(prompts)} prompts but {len(completions)} completion pairs.")
        if not shuffle_order and self.config.order == "random":
            raise InvalidArgumentError(
                "shuffle_order=False asks for the order as given, which this judge does not have: use "
                "JudgeConfig(order='both') (both orders, no position bias) or call with shuffle_order=True."
            )
        for i, pair in enumerate(completions):
            if isinstance(pair, str) or len(pair) != 2:
                raise InvalidArgumentError(f"completions[{i}] must be a pair [first, second], got {pair!r}.")
        if not prompts:
            return []
        instructions = [prompt_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        firsts = [completion_text(c[0], f"completions[{i}][0]") for i, c in enumerate(completions)]
        seconds = [completion_text(c[1], f"completions[{i}][1]") for i, c in enumerate(completions)]
        languages = self.languages_for(prompts)
        prefs: list[float | None] = [None] * len(prompts)
        # judge_pairwise needs a non-empty second answer; an empty second loses to a non-empty first by rule.
        todo = [i for i in range(len(prompts)) if seconds[i].strip()]
        for i in range(len(prompts)):
            if not seconds[i].strip():
                prefs[i] = 0.5 if not firsts[i].strip() else 1.0
        if todo:
            judged = self._judge(
                [instructions[i] for i in todo],
                [firsts[i] for i in todo],
                [seconds[i] for i in todo],
                [languages[i] for i in todo],
            )
            for i, p in zip(todo, judged, strict=True):
                prefs[i] = p
        if return_scores:
            return [math.nan if p is None else float(p) for p in prefs]
        return [self._index(p, instructions[i], firsts[i], seconds[i]) for i, p in enumerate(prefs)]

    def _index(self, p: float | None, instruction: str, first: str, second: str) -> int:
        if p is None:
            return -1
        if p > 0.5:
            return 0
        if p < 0.5:
            return 1
        if self.tie_break == "first":
            return 0
        if self.tie_break == "second":
            return 1
        if self.tie_break == "invalid":
            return -1
        from xl_suite.fingerprint import stable_hash

        return int(stable_hash("tie", self.config.seed, instruction, first, second), 16) % 2


class XlAlpacaEvalRewardFunc(_JudgeBase):
    """A TRL reward function: P(completion beats the reference answer) by the XL-AlpacaEval judge.

    For ``GRPOTrainer(reward_funcs=...)``, ``RLOOTrainer`` and ``trl.experimental.online_dpo.OnlineDPOTrainer``. TRL
    calls it with the prompts, the completions and the dataset's other columns; the dataset must hold the reference
    answer of each prompt (``reference_column``) and, unless ``language`` is given, its target language
    (``language_column``).

    Args:
        engine: the judge's Generator or EngineSpec.
        config: :class:`~xl_suite.evaluation.judging.JudgeConfig` (default: both orders, greedy, no rubric).
        cache_dir: annotation cache folder; None judges in memory.
        reference_column: dataset column with the reference answers. Default ``"reference"``.
        language_column: dataset column with the target language codes. Default ``"language"``.
        language: one target language for every prompt, instead of ``language_column``.

    Returns (when called):
        One float in [0, 1] per completion (0.5 is a tie), or None where no verdict could be parsed.

    >>> from xl_suite import FakeGenerator
    >>> reward = XlAlpacaEvalRewardFunc(FakeGenerator(lambda m, i, s: '{"winner": "tie"}'))
    >>> reward(prompts=["Wie spät ist es?"], completions=["Drei Uhr."], reference=["Es ist drei."], language=["de"])
    [0.5]
    """

    __name__ = "xl_alpacaeval_judge"  # the name TRL logs the reward under (rewards/xl_alpacaeval_judge/mean)

    def __init__(
        self,
        engine,
        *,
        config=None,
        cache_dir: str | None = None,
        reference_column: str = "reference",
        language_column: str = "language",
        language: str | None = None,
    ):
        super().__init__(engine, config=config, cache_dir=cache_dir)
        self.reference_column = reference_column
        self.language_column = language_column
        self.language = language

    def __call__(self, prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
        """Judge each completion against its prompt's reference answer (TRL's reward-function signature)."""
        if len(prompts) != len(completions):
            raise InvalidArgumentError(f"{len(prompts)} prompts but {len(completions)} completions.")
        references = columns.get(self.reference_column)
        if references is None:
            raise InvalidArgumentError(
                f"The training dataset has no {self.reference_column!r} column (the reference answers the judge "
                f"compares with); columns passed by TRL: {sorted(columns)}. Add it or set reference_column=."
            )
        if self.language is not None:
            languages = [self.language] * len(prompts)
        else:
            languages = columns.get(self.language_column)
            if languages is None:
                raise InvalidArgumentError(
                    f"The training dataset has no {self.language_column!r} column (the target language of each "
                    f"prompt); columns passed by TRL: {sorted(columns)}. Add it, or pass language='<code>'."
                )
        if not prompts:
            return []
        if len(references) != len(prompts) or len(languages) != len(prompts):
            raise InvalidArgumentError(
                f"{len(prompts)} prompts but {len(references)} references and {len(languages)} languages."
            )
        for i, code in enumerate(languages):
            if not isinstance(code, str):
                raise InvalidArgumentError(
                    f"{self.language_column}[{i}] is {code!r}, not a language code: every training row needs its "
                    "target language (drop or fill rows without one, or pass language='<code>')."
                )
        return self._judge(
            [prompt_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)],
            [completion_text(c, f"completions[{i}]") for i, c in enumerate(completions)],
            [completion_text(r, f"{self.reference_column}[{i}]") for i, r in enumerate(references)],
            list(languages),
        )
