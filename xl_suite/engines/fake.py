"""Test doubles: a deterministic generator and canned replies to the shipped synthesis templates.

For flow and parsing tests only (alpaca_eval's ``decoders/test.py``, distilabel's ``DummyLLM``); numbers produced
with them mean nothing. Engine-tier tests use the real vLLM engine on a tiny local model instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading

from xl_suite.engines import strict_kwargs
from xl_suite.engines.base import Completion, failed_completion
from xl_suite.errors import GenerationError, XlSuiteError
from xl_suite.fingerprint import stable_hash
from xl_suite.languages import get_language
from xl_suite.status import RowStatus


__all__ = ["FakeGenerator", "FakeSynthesisResponder", "FaultInjectingResponder"]


@strict_kwargs
class FakeGenerator:
    """Deterministic CPU double for flow and parsing tests (alpaca_eval's ``decoders/test.py``).

    ``responder(messages, index, sampling)`` returns the text of candidate ``index``; the default echoes a
    hash of the last user turn. It is never a substitute for a real engine in engine-tier tests.
    ``concurrent_calls=True`` lets pipelines overlap calls, as with vLLM's async engine (the counters are
    thread-safe; ``max_in_flight`` records the most calls seen at once).

    The keyword arguments after ``fail_on`` are plain values, so ``--backend fake --engine-kwargs JSON`` can set
    them from the command line (fault tests of the CLI). None of them enters :meth:`fingerprint`: a rerun with
    other values reuses the cached chunks and retries only the failed rows.

    Args:
        responder: ``(messages, index, sampling) -> str``.
        model: model name recorded on rows.
        revision: revision recorded on rows.
        fail_on: ``conversation -> bool``; True raises :class:`~xl_suite.errors.GenerationError` for it.
        reply: a fixed reply for every prompt (e.g. a judge verdict ``'{"winner": "A"}'``) instead of ``responder``.
        empty_every: every k-th prompt, chosen by a hash of its last turn, gets an empty reply (0: never).
        delay: seconds to sleep per prompt (a slow engine, for interruption tests).
        concurrent_calls: let pipelines overlap calls (see above).
        context_tokens: the fake's context, in words (the fake's tokens): a prompt longer than
            ``context_tokens - max_tokens`` words gets a ``too_long`` row, as a real engine's would (None: no limit).
        truncate_prompts: keep the last words of such a prompt instead, and mark its completions
            ``extra["prompt_truncated"]``, as the vLLM backend does (this one enters the fingerprint).

    >>> from xl_suite.engines.base import SamplingConfig
    >>> g = FakeGenerator(reply="ok", empty_every=1)
    >>> g.generate([[{"role": "user", "content": "Hi"}]], SamplingConfig())[0][0].text
    ''
    """

    backend = "fake"

    def __init__(
        self,
        responder=None,
        *,
        model: str = "fake-model",
        revision: str | None = None,
        fail_on=None,
        reply: str | None = None,
        empty_every: int = 0,
        delay: float = 0.0,
        concurrent_calls: bool = False,
        context_tokens: int | None = None,
        truncate_prompts: bool = False,
    ):
        from xl_suite.errors import InvalidArgumentError

        if reply is not None and not isinstance(reply, str):
            raise InvalidArgumentError(f"fake engine: reply must be a string, got {reply!r}.")
        if isinstance(empty_every, bool) or not isinstance(empty_every, int) or empty_every < 0:
            raise InvalidArgumentError(f"fake engine: empty_every must be an integer >= 0, got {empty_every!r}.")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < 3600:
            raise InvalidArgumentError(f"fake engine: delay must be seconds in [0, 3600), got {delay!r}.")
        if context_tokens is not None and (
            isinstance(context_tokens, bool) or not isinstance(context_tokens, int) or context_tokens < 2
        ):
            raise InvalidArgumentError(f"fake engine: context_tokens must be an integer >= 2, got {context_tokens!r}.")
        if truncate_prompts and context_tokens is None:
            raise InvalidArgumentError(
                "fake engine: truncate_prompts needs a context to truncate to: set context_tokens as well."
            )
        self.model = model
        self.revision = revision
        self.context_tokens = context_tokens
        self.truncate_prompts = bool(truncate_prompts)
        if reply is not None:
            responder = lambda m, i, s: reply  # noqa: E731 - a one-line responder
        self._responder = responder or (lambda m, i, s: f"fake answer {i} to: {m[-1]['content'][:40]}")
        self._fail_on = fail_on
        self._empty_every = empty_every
        self._delay = float(delay)
        self.concurrent_calls = concurrent_calls
        self.calls = 0
        self.prompts_seen = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def _empty(self, conv) -> bool:
        if not self._empty_every:
            return False
        h = int(hashlib.sha256(conv[-1]["content"].encode("utf-8")).hexdigest()[:8], 16)
        return h % self._empty_every == 0

    def generate(self, conversations, sampling):
        with self._lock:
            self.calls += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return self._generate(conversations, sampling)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _generate(self, conversations, sampling):
        import time

        out = []
        for conv in conversations:
            if self._fail_on is not None and self._fail_on(conv):
                raise GenerationError(f"fake failure on {conv[-1]['content'][:40]!r}")
            if self._delay:
                time.sleep(self._delay)
            with self._lock:
                self.prompts_seen += 1
            prompt_tokens = sum(len(m["content"].split()) for m in conv)
            limit = None if self.context_tokens is None else max(1, self.context_tokens - sampling.max_tokens)
            truncated = limit is not None and prompt_tokens > limit
            if truncated and not self.truncate_prompts:
                message = f"the prompt has {prompt_tokens} words, the fake's context {self.context_tokens}"
                out.append([failed_completion(RowStatus.TOO_LONG, message, prompt_tokens=prompt_tokens)] * sampling.n)
                continue
            if truncated:
                conv, prompt_tokens = _keep_last_words(conv, limit), limit
            cands = []
            for i in range(sampling.n):
                text = "" if self._empty(conv) else self._responder(conv, i, sampling)
                cands.append(
                    Completion(
                        text=text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(text.split()),
                        finish_reason="stop",
                        extra={"prompt_truncated": True} if truncated else {},
                    )
                )
            out.append(cands)
        return out

    def fingerprint(self) -> str:
        if self.truncate_prompts:  # truncation changes outputs, as in the vLLM backend
            return stable_hash("fake", self.model, self.revision, "truncate_prompts", self.context_tokens)
        return stable_hash("fake", self.model, self.revision)

    def supports_structured_output(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _keep_last_words(conv, limit: int):
    """``conv`` with words dropped from its start until ``limit`` words remain (left truncation)."""
    words = [m["content"].split() for m in conv]
    drop = sum(len(w) for w in words) - limit
    out = []
    for m, w in zip(conv, words, strict=True):
        cut = min(drop, len(w))
        drop -= cut
        out.append({**m, "content": " ".join(w[cut:])})
    return out


_FAKE_ANSWERS = {
    "en": "This is a detailed answer in English that explains every important point of the question.",
    "de": "Das ist eine ausführliche Antwort auf Deutsch, die alle wichtigen Punkte der Frage erklärt.",
    "mt": "Din hija tweġiba dettaljata bil-Malti li tispjega l-punti kollha importanti tal-mistoqsija.",
    "fr": "Voici une réponse détaillée en français qui explique tous les points importants de la question.",
    "pt": "Esta é uma resposta detalhada em português que explica todos os pontos importantes da pergunta.",
    "hu": "Ez egy részletes magyar nyelvű válasz, amely elmagyarázza a kérdés minden fontos pontját.",
    "lt": "Tai išsamus atsakymas lietuvių kalba, kuris paaiškina visus svarbiausius klausimo dalykus.",
    "ga": "Is freagra mionsonraithe i nGaeilge é seo a mhíníonn na pointí tábhachtacha go léir den cheist.",
    "zh": "这是一个详细的中文回答，解释了这个问题的所有重要内容。",
    "hi": "यह हिंदी में एक विस्तृत उत्तर है जो प्रश्न के सभी महत्वपूर्ण बिंदुओं को समझाता है।",
    "fi": "Tämä on yksityiskohtainen suomenkielinen vastaus, joka selittää kysymyksen kaikki tärkeät kohdat.",
    "tr": "Bu, sorunun tüm önemli noktalarını açıklayan ayrıntılı bir Türkçe cevaptır.",
    "sw": "Hili ni jibu la kina kwa Kiswahili linaloeleza mambo yote muhimu ya swali.",
}


class FakeSynthesisResponder:
    """Deterministic replies to the shipped synthesis templates, for :class:`FakeGenerator`.

    Not a model: it recognises each stage's prompt and returns a canned, well-formed reply (an instruction made of
    the passage's first words, the passage as the answer, JSON scores derived from a hash of the prompt, a fixed
    sentence in the target language numbered per prompt and candidate, with numbers that keep the answers apart
    for near-duplicate removal). It makes the flow testable and
    ``xl-suite synthesize --backend fake`` runnable offline; numbers produced with it mean nothing.

    Args:
        unparseable_every: every k-th English scoring prompt (by hash) gets a reply that is not JSON (0: never).
        low_score_every: every k-th English pair (by hash) gets scores of 2, below the default threshold (0: never).

    >>> from xl_suite import FakeGenerator, SamplingConfig
    >>> r = FakeSynthesisResponder()
    >>> msgs = [{"role": "system", "content": "You always write your answers in Maltese (Malti), whatever..."},
    ...         {"role": "user", "content": "Q"}]
    >>> r(msgs, 0, SamplingConfig()).startswith("Din hija")
    True
    """

    def __init__(self, unparseable_every: int = 0, low_score_every: int = 0):
        self.unparseable_every = unparseable_every
        self.low_score_every = low_score_every

    def __call__(self, messages, index: int, sampling) -> str:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        h = int(hashlib.sha256(user.encode("utf-8")).hexdigest()[:8], 16)
        if "# Answer A" in user and "# Answer B" in user:  # the pairwise judge (judge_pairwise.jinja)
            return json.dumps({"winner": "AB"[h % 2]})
        if "JSON" in system or sampling.json_schema or "# Your scores" in user:  # scoring, or the rubric judge
            names = re.findall(r"^- (\w+):", user, re.MULTILINE) or ["score"]
            if "bilingual" in system:
                values = [3 + (h >> (3 * k)) % 3 for k in range(len(names))]
            else:
                if self.unparseable_every and h % self.unparseable_every == 0:
                    return "I would rate this response quite highly overall."
                low = self.low_score_every and (h // 7) % self.low_score_every == 0
                values = [2 if low else 4 + (h >> k) % 2 for k in range(len(names))]
            return json.dumps(dict(zip(names, values, strict=True)))
        passage = re.search(r"<passage>\s*(.*?)\s*</passage>", user, re.DOTALL)
        if "user requests" in system and passage:
            words = passage.group(1).split()[:10]
            return "Can you explain this: " + " ".join(words).rstrip(".,;:") + "?"
        if "in English" in system and passage:
            return "Here is a clear answer. " + passage.group(1)
        lang = re.search(r"answers in ([A-Z][\w ]*?) \(", system)
        code = "en"
        if lang:
            try:
                code = get_language(lang.group(1).lower()).code
            except XlSuiteError:
                code = "en"
        # numbers drawn from the prompt's hash make every answer distinct enough for near-duplicate removal
        marks = " ".join(str((h // (k + 1) + 7919 * index) % 99991) for k in range(10))
        return f"{_FAKE_ANSWERS.get(code, _FAKE_ANSWERS['en'])} ({h}-{index}: {marks})"


class FaultInjectingResponder:
    """Wraps a responder for fault and scheduling tests (picklable, so Ray workers can use it).

    Each reply waits ``delay`` seconds (chunks then take real time, as with a model). With ``kill_on``, the first
    prompt whose last turn contains that text kills the process it runs in with SIGKILL (a worker dying mid-run), once:
    ``marker`` (a file path) is written first and, once it exists, nothing is killed again.
    """

    def __init__(self, inner=None, *, delay: float = 0.0, kill_on: str | None = None, marker: str | None = None):
        if kill_on is not None and marker is None:
            raise XlSuiteError("kill_on needs marker= (a file that records the kill, so it happens once).")
        self.inner = inner or FakeSynthesisResponder()
        self.delay, self.kill_on, self.marker = delay, kill_on, marker

    def __call__(self, messages, index: int, sampling) -> str:
        import os
        import signal
        import time
        from pathlib import Path

        if self.kill_on and self.kill_on in messages[-1]["content"] and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()), encoding="utf-8")
            os.kill(os.getpid(), signal.SIGKILL)
        if self.delay:
            time.sleep(self.delay)
        return self.inner(messages, index, sampling)
