"""Training data that is safe to train on: benchmark decontamination and near-duplicate removal.

**Decontamination** follows the n-gram rule of the Tulu 3 / OLMo post-training pipelines (allenai/open-instruct,
``decontamination/search.py``: ``--ngram_size 8 --match_threshold 0.5``): a benchmark prompt is *found* in a text
when at least ``threshold`` (default 0.5) of the prompt's distinct word n-grams (default n = 8) occur in that text.
A synthesized pair is dropped when any benchmark prompt is found in its instruction or in one of its responses.

Short prompts: a prompt with fewer than ``n`` tokens (but at least :data:`MIN_PROMPT_TOKENS`) is matched as one
n-gram of its own length, i.e. the whole prompt must occur contiguously in the text; prompts shorter than
:data:`MIN_PROMPT_TOKENS` tokens ("hi", "tell me a joke") would match ordinary text and are not used (the summary
counts them). Tokens are lower-cased word characters; each Han/Kana/Thai/Lao/Khmer/Myanmar/Tibetan character is a
token of its own, so texts without spaces are matched too.

**Near-duplicates** are found with MinHash LSH (``datasketch``): character 5-gram shingles of the normalised text
(script-independent) hashed with CRC-32, 256 permutations (datasketch's ``affine32`` scheme), a fixed seed; a row is a near-duplicate when its instruction or its
response has an estimated Jaccard similarity of at least ``threshold`` (default 0.8) with a row kept earlier in the
same language. Rows are visited in output order, so the result is deterministic.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from xl_suite.errors import InvalidArgumentError
from xl_suite.status import CONTAMINATED_PREFIX, RowStatus
from xl_suite.utils.imports import require


logger = logging.getLogger(__name__)

__all__ = [
    "MIN_PROMPT_TOKENS",
    "NGRAM",
    "OVERLAP_THRESHOLD",
    "NEAR_DUP_THRESHOLD",
    "Benchmark",
    "NearDuplicateIndex",
    "builtin_benchmark_path",
    "contamination",
    "decontaminate_batch",
    "resolve_benchmark",
    "tokens",
]

#: Word n-gram length (Tulu 3's open-instruct decontamination uses 8).
NGRAM = 8
#: Share of a prompt's n-grams that must occur in a text (open-instruct's ``match_threshold``).
OVERLAP_THRESHOLD = 0.5
#: Prompts with fewer tokens are not used for matching (they would match ordinary text).
MIN_PROMPT_TOKENS = 4
#: Default MinHash Jaccard threshold of near-duplicate removal.
NEAR_DUP_THRESHOLD = 0.8
_NUM_PERM = 256
_SHINGLE = 5
_MINHASH_SEED = 1
_SCHEME = "affine32"  # datasketch 2's default permutation scheme, named so the hashes never change with a default

# Scripts written without spaces between words: one token per character.
_CHAR_SCRIPTS = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
)
_TOKEN_RE = re.compile(rf"[{_CHAR_SCRIPTS}]|[^\W_{_CHAR_SCRIPTS}]+")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; each character of a script without spaces is a token.

    >>> tokens("Hello, World! It's 2 o'clock.")
    ['hello', 'world', 'it', 's', '2', 'o', 'clock']
    >>> tokens("你好世界 ok")
    ['你', '好', '世', '界', 'ok']
    """
    return _TOKEN_RE.findall(str(text).lower())


def _ngrams(toks: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


@dataclass(frozen=True)
class _Index:
    """n -> {n-gram: prompt ids}, and each prompt's number of distinct n-grams."""

    grams: dict[int, dict[tuple[str, ...], tuple[int, ...]]]
    sizes: tuple[int, ...]
    too_short: int


@lru_cache(maxsize=4)
def _index(prompts: tuple[str, ...], n: int) -> _Index:
    grams: dict[int, dict[tuple[str, ...], list[int]]] = {}
    sizes, too_short = [], 0
    for pid, prompt in enumerate(prompts):
        toks = tokens(prompt)
        if len(toks) < MIN_PROMPT_TOKENS:
            too_short += 1
            sizes.append(0)
            continue
        k = min(n, len(toks))
        own = _ngrams(toks, k)
        sizes.append(len(own))
        for g in own:
            grams.setdefault(k, {}).setdefault(g, []).append(pid)
    frozen = {k: {g: tuple(ids) for g, ids in v.items()} for k, v in grams.items()}
    return _Index(frozen, tuple(sizes), too_short)


def contamination(
    text: str, prompts: Sequence[str], *, n: int = NGRAM, threshold: float = OVERLAP_THRESHOLD
) -> tuple[int, float]:
    """The benchmark prompt most present in ``text``: (its index, the share of its n-grams found), or (-1, 0.0).

    >>> p = ["Give me three tips for staying focused while working from home today."]
    >>> contamination("Sure. Give me three tips for staying focused while working from home today, please", p)
    (0, 1.0)
    >>> contamination("Tips for cooking rice at home.", p)
    (-1, 0.0)
    """
    index = _index(tuple(prompts), n)
    toks = tokens(text)
    hits: dict[int, int] = {}
    for k, table in index.grams.items():
        for g in _ngrams(toks, k):
            for pid in table.get(g, ()):
                hits[pid] = hits.get(pid, 0) + 1
    best, best_ratio = -1, 0.0
    for pid, count in sorted(hits.items()):
        ratio = count / index.sizes[pid]
        if ratio >= threshold and ratio > best_ratio:
            best, best_ratio = pid, ratio
    return best, best_ratio


def decontaminate_batch(
    batch: dict[str, list],
    *,
    columns: Sequence[str],
    prompts: Sequence[str],
    prompt_ids: Sequence[str],
    enabled: bool = True,
    n: int = NGRAM,
    threshold: float = OVERLAP_THRESHOLD,
) -> dict[str, list]:
    """Mark rows in which a benchmark prompt is found (:func:`contamination`) in any of ``columns``.

    Adds ``contamination_status`` (``ok``, or ``contaminated_<column>`` for the first column with a match),
    ``contamination_match`` (the matched prompt's id, ``""`` when clean), ``contamination_overlap`` (share of the
    prompt's n-grams found) and ``decontaminated`` (keep flag: clean, or always True when ``enabled`` is False, the
    matches then being recorded only). List columns (candidates) are checked element by element.

    >>> out = decontaminate_batch({"instruction": ["Explain how a rainbow forms, in simple terms please.", "Bake?"]},
    ...     columns=["instruction"], prompts=["Explain how a rainbow forms, in simple terms."], prompt_ids=["p1"])
    >>> out["contamination_status"], out["contamination_match"], out["decontaminated"]
    (['contaminated_instruction', 'ok'], ['p1', ''], [False, True])
    """
    if len(prompts) != len(prompt_ids):
        raise InvalidArgumentError(f"{len(prompts)} benchmark prompts but {len(prompt_ids)} ids.")
    rows = len(next(iter(batch.values()))) if batch else 0
    status, match, overlap = [RowStatus.OK] * rows, [""] * rows, [0.0] * rows
    for column in columns:
        for i, value in enumerate(batch[column]):
            if status[i] != RowStatus.OK:
                continue
            for text in value if isinstance(value, list) else [value]:
                pid, ratio = contamination(text or "", prompts, n=n, threshold=threshold)
                if pid >= 0:
                    status[i], match[i], overlap[i] = f"{CONTAMINATED_PREFIX}{column}", prompt_ids[pid], ratio
                    break
    return {
        "contamination_status": status,
        "contamination_match": match,
        "contamination_overlap": overlap,
        "decontaminated": [s == RowStatus.OK or not enabled for s in status],
    }


decontaminate_batch.outputs = (
    "contamination_status",
    "contamination_match",
    "contamination_overlap",
    "decontaminated",
)


# -- the benchmark ---------------------------------------------------------------------------------------------


def builtin_benchmark_path() -> str:
    """The project-written sample of XL-AlpacaEval-style prompts shipped with the package (the demo's prompts)."""
    return str(resources.files("xl_suite") / "data" / "demo_prompts.jsonl")


@dataclass(frozen=True)
class Benchmark:
    """The benchmark prompts a synthesis run is decontaminated against.

    Attributes:
        prompts: the prompt texts (English AlpacaEval prompts, or translated m-AlpacaEval prompts).
        ids: a stable id per prompt (:func:`xl_suite.sources.prompt_id`).
        sources: where they came from (the paths/URLs as given, or ``"builtin-sample"``).
        note: why the run is not decontaminated against the full AlpacaEval set, when it is not.
    """

    prompts: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    note: str | None = None
    enabled: bool = True
    sha: str = field(default="", compare=False)

    def summary(self) -> dict:
        """What ``summary.json`` records (no prompt texts)."""
        index = _index(self.prompts, NGRAM) if self.prompts else None
        return {
            "enabled": self.enabled,
            "sources": list(self.sources),
            "prompts": len(self.prompts),
            "prompts_too_short": index.too_short if index else 0,
            "sha256": self.sha,
            "note": self.note,
        }


def _benchmark(records: Iterable[Mapping], sources: Sequence[str], note: str | None) -> Benchmark:
    from xl_suite.sources import prompt_id

    seen: dict[str, str] = {}
    for rec in records:
        text = rec.get("instruction") or rec.get("prompt") or rec.get("question")
        if isinstance(text, str) and text.strip():
            seen.setdefault(text, str(rec.get("id") or prompt_id(text)))
    prompts = tuple(sorted(seen))
    sha = hashlib.sha256("\0".join(prompts).encode("utf-8")).hexdigest()
    return Benchmark(prompts, tuple(seen[p] for p in prompts), tuple(sources), note, True, sha)


def resolve_benchmark(sources: Sequence[str] | None, *, enabled: bool = True) -> Benchmark:
    """The benchmark prompts to decontaminate against.

    The project's built-in sample of XL-AlpacaEval-style prompts (the demo's benchmark) is always included. Besides
    it: ``sources`` (AlpacaEval JSON/JSONL/Parquet files or m-AlpacaEval files; records need ``instruction``), read
    as given (an unreadable one is an error); or, without sources, AlpacaEval's 805 prompts from the Hub. When the
    Hub cannot be read (offline, no network), only the sample is used and :attr:`Benchmark.note` says so (it goes
    into the summary's warnings). ``enabled=False`` resolves nothing and records that decontamination is off.

    Raises:
        xl_suite.errors.SourceError: a given source cannot be read (the message names it).
    """
    from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE, SourceError, read_alpaca_eval, read_records

    if not enabled:
        return Benchmark(enabled=False, note="decontamination is off (--no-decontaminate)")
    sample = read_records(builtin_benchmark_path())
    if sources:
        records = []
        for src in sources:
            try:
                records += read_alpaca_eval(src)
            except SourceError as e:
                raise SourceError(f"--decontaminate-against: {e}") from e
        return _benchmark(records + sample, [*sources, "builtin-sample"], None)
    try:
        records = read_alpaca_eval(DEFAULT_ALPACA_EVAL_SOURCE)
        return _benchmark(records + sample, [DEFAULT_ALPACA_EVAL_SOURCE, "builtin-sample"], None)
    except SourceError as e:
        logger.info("AlpacaEval prompts not available (%s); decontaminating against the built-in sample", e)
        note = (
            "AlpacaEval's 805 prompts could not be read from the Hub (offline or unreachable); the run was "
            "decontaminated only against the built-in sample of "
            f"{len(sample)} prompts. Pass --decontaminate-against PATH "
            "(AlpacaEval's alpaca_eval.json, m-AlpacaEval files) to check against the real benchmark."
        )
        return _benchmark(sample, ["builtin-sample"], note)


# -- near-duplicates -------------------------------------------------------------------------------------------


def _shingles(text: str) -> set[bytes]:
    norm = " ".join(tokens(text))
    if len(norm) <= _SHINGLE:
        return {norm.encode("utf-8")} if norm else set()
    return {norm[i : i + _SHINGLE].encode("utf-8") for i in range(len(norm) - _SHINGLE + 1)}


class NearDuplicateIndex:
    """MinHash LSH over the rows kept so far, one index per (language, field).

    >>> idx = NearDuplicateIndex(threshold=0.8)
    >>> text = "Bread needs flour, water, salt and yeast; knead it well and let the dough rise for two hours."
    >>> idx.add("de", ["How do I bake bread?", text])
    True
    >>> idx.add("de", ["How can I bake bread?", text.replace("two hours", "three hours")])
    False
    >>> idx.add("de", ["What is the capital of France?", "Paris is the capital and largest city of France."])
    True
    """

    def __init__(self, threshold: float = NEAR_DUP_THRESHOLD):
        if not 0 < threshold <= 1:
            raise InvalidArgumentError(f"near-duplicate threshold must be in (0, 1], got {threshold}.")
        # An optional dependency: fail here, before any engine starts, with the extra to install.
        require("datasketch", "Near-duplicate removal of synthesized pairs (near_dedup=True)")
        self.threshold = threshold
        self._lsh: dict[tuple[str, int], object] = {}
        self._hashes: dict[str, object] = {}
        self._count = 0
        self._permutations = None  # shared by every MinHash (datasketch would otherwise draw them per object)
        self._params: tuple[int, int] | None = None
        #: rows the caller dropped as near-duplicates (counted by the caller, reported in the summary)
        self.removed = 0

    def _minhash(self, text: str):
        """The MinHash of ``text``'s shingles (``None`` for a text without any: it matches nothing)."""
        from datasketch import LeanMinHash, MinHash

        shingles = _shingles(text or "")
        if not shingles:
            return None
        if self._permutations is None:
            self._permutations = MinHash(num_perm=_NUM_PERM, seed=_MINHASH_SEED, scheme=_SCHEME).permutations
        m = MinHash(
            num_perm=_NUM_PERM,
            seed=_MINHASH_SEED,
            permutations=self._permutations,
            scheme=_SCHEME,
            hashfunc=zlib.crc32,  # deterministic and ~10x faster than datasketch's SHA-1 for short shingles
        )
        m.update_batch(sorted(shingles))
        return LeanMinHash(m)  # hash values only: a kept row costs ~2 KB per text

    def add(self, language: str, texts: Sequence[str]) -> bool:
        """Add a row (its texts: instruction, response) unless it near-duplicates a kept row; True when added."""
        from datasketch import MinHashLSH

        hashes = [self._minhash(t) for t in texts]
        for f, m in enumerate(hashes):
            lsh = self._lsh.get((language, f))
            if lsh is None or m is None:
                continue
            for key in lsh.query(m):
                if self._hashes[key].jaccard(m) >= self.threshold:
                    return False
        key = str(self._count)
        self._count += 1
        for f, m in enumerate(hashes):
            if m is None:
                continue
            lsh = self._lsh.get((language, f))
            if lsh is None:  # the band parameters are optimised once (scipy integration), then reused
                lsh = MinHashLSH(threshold=self.threshold, num_perm=_NUM_PERM, params=self._params)
                self._params = (lsh.b, lsh.r)
                self._lsh[(language, f)] = lsh
            lsh.insert(f"{key}-{f}", m)
            self._hashes[f"{key}-{f}"] = m
        return True
