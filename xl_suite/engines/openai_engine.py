"""OpenAI-compatible HTTP backend (OpenAI itself, ``vllm serve``, any server speaking ``/v1/chat/completions``).

Requests go through the official ``openai`` client with its own retries disabled; this module retries 408/409/429,
5xx, timeouts and connection errors itself, with exponential backoff and jitter (honouring ``Retry-After``), so every
retry is counted in :attr:`OpenAIGenerator.ledger`. Conversations are sent concurrently from a thread pool, at
most ``max_concurrency`` at a time.

API keys are read from the environment only (``api_key_env``) and never logged or stored on the generator's
public attributes. When ``base_url`` is given explicitly and the variable is unset, a placeholder key
(``"EMPTY"``) is sent: local servers such as ``vllm serve`` without ``--api-key`` accept any key. Without
``base_url`` a missing key is an error.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from xl_suite.engines import completion_status, is_openai_available, strict_kwargs, validate_conversations
from xl_suite.engines.base import (
    Completion,
    Messages,
    SamplingConfig,
    TokenLedger,
    conversation_seed,
    failed_completion,
)
from xl_suite.errors import GenerationError, InvalidArgumentError, MissingDependencyError
from xl_suite.fingerprint import stable_hash
from xl_suite.safety import install_secret_filter, scrub_secrets
from xl_suite.status import RowStatus


logger = logging.getLogger(__name__)

__all__ = ["OpenAIGenerator", "OPENAI_INSTALL_HINT", "RETRYABLE_STATUS"]

OPENAI_INSTALL_HINT = "pip install 'xl-suite[openai]'"
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Statuses that say the request itself was bad (this prompt), not the setup: the row fails, the run goes on.
ROW_STATUS = frozenset({400, 413, 422})
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context length", "too many tokens")


def _row_status(error, retryable: bool) -> RowStatus | None:
    """The per-row status of a request that failed for good, or None when the failure concerns every request."""
    code = getattr(error, "status_code", None)
    if retryable:
        return RowStatus.ERROR  # retries exhausted: this request, this time
    if code in ROW_STATUS:
        text = str(getattr(error, "body", None) or "") + " " + str(error)
        return RowStatus.TOO_LONG if any(m in text.lower() for m in _CONTEXT_MARKERS) else RowStatus.ERROR
    return None


_PLACEHOLDER_KEY = "EMPTY"
#: What to do when a judge asks a server for log-probabilities it does not return (or rejects).
NO_LOGPROBS_FIX = (
    "Only the judge asks for them (soft preferences). Judge with discrete verdicts instead: a judge preset file "
    'with "logprobs": null (xl-suite evaluate --judge-preset FILE.json; Python: JudgeConfig(logprobs=None)), or '
    "serve the judge where log-probabilities are returned (vllm serve, OpenAI's chat models)."
)


def _rejects_logprobs(error) -> bool:
    """True for a 400/422 whose message says the server does not take the ``logprobs`` parameters."""
    code = getattr(error, "status_code", None)
    text = (str(getattr(error, "body", None) or "") + " " + str(error)).lower()
    return code in (400, 422) and "logprob" in text


@strict_kwargs
class OpenAIGenerator:
    """Chat completions over HTTP, implementing :class:`~xl_suite.engines.base.Generator`.

    Args:
        model: model name as the server knows it (``"gpt-4o-mini-2024-07-18"``, a ``--served-model-name``).
        base_url: server URL ending in ``/v1``; ``None`` means the client's default (OpenAI, or ``$OPENAI_BASE_URL``).
        api_key_env: environment variable holding the API key.
        revision: model version recorded in fingerprints (e.g. a dated snapshot name or a served checkpoint SHA).
        max_concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt.
        timeout: seconds per HTTP request.
        total_timeout: seconds one conversation may take over all its attempts and waits (None: no budget). With
            the defaults a hung server fails a prompt after about 60 s, not ``(max_retries + 1) * timeout``.
        price_per_1k_input: price of 1,000 prompt tokens; with ``price_per_1k_output`` the ledger tracks cost.
        price_per_1k_output: price of 1,000 completion tokens.
        backoff_base: first retry delay in seconds; doubles on each retry.
        backoff_max: cap on one delay (also on ``Retry-After``).
        max_tokens_param: name of the length parameter; OpenAI's reasoning models want ``"max_completion_tokens"``.
        truncate_prompts: refused when True: the server tokenizes the prompt, so it cannot be truncated here (a
            prompt that does not fit gets a ``too_long`` row). Accepted as False so a spec can name it.

    Raises:
        ImportError: the ``openai`` package is missing.
        ValueError: no key in ``api_key_env`` and no explicit ``base_url``; or a bad argument.
    """

    backend = "openai"
    #: Calls from several threads share one window of ``max_concurrency`` requests (a sliding window, not waves).
    concurrent_calls = True
    #: Each request stands alone (one conversation, one HTTP call): the run layer sends one per call, ``max_concurrency``
    #: calls at a time, and stores each answer as soon as it arrives, so a kill loses only the requests in flight.
    independent_requests = True
    #: Requests failing for good in a row (no success between) after which the call raises instead of returning
    #: ``error`` rows: a dead server or a wrong setting stops the run early.
    max_consecutive_failures = 16
    #: Seconds between the lines saying that requests are still waiting (a slow or trickling server).
    progress_every = 15.0

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        revision: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 30,
        total_timeout: float | None = 60,
        price_per_1k_input: float | None = None,
        price_per_1k_output: float | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        truncate_prompts: bool = False,
    ):
        if truncate_prompts:
            raise InvalidArgumentError(
                "The openai backend cannot honour truncate_prompts (--truncate-prompts): the server tokenizes the "
                "prompt and rejects one that does not fit, and that row gets the status too_long. Drop the option, "
                "or use the vllm or transformers backend."
            )
        if max_concurrency < 1:
            raise InvalidArgumentError(f"max_concurrency must be >= 1, got {max_concurrency}.")
        if max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be >= 0, got {max_retries}.")
        if not timeout or timeout <= 0:
            raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        if total_timeout is not None and total_timeout <= 0:
            raise InvalidArgumentError(
                f"total_timeout must be a positive number of seconds or None, got {total_timeout!r}."
            )
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise InvalidArgumentError(
                f"max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_param!r}."
            )
        if (price_per_1k_input is None) != (price_per_1k_output is None):
            raise InvalidArgumentError("Give both price_per_1k_input and price_per_1k_output, or neither.")
        if not is_openai_available():
            raise MissingDependencyError(f"The OpenAI backend needs the openai client: {OPENAI_INSTALL_HINT}.")
        import openai

        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise InvalidArgumentError(
                    f"No API key: set the environment variable {api_key_env} (or pass api_key_env=<variable name>; "
                    "for a local server without a key, pass base_url explicitly)."
                )
            logger.info("%s is not set; sending a placeholder key to %s", api_key_env, base_url)
            key = _PLACEHOLDER_KEY
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.revision = revision
        self.max_concurrency = max_concurrency
        self.in_flight_rows = 2 * max_concurrency  # queued behind the window, so a freed slot is refilled at once
        self.max_retries = max_retries
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens_param = max_tokens_param
        self.ledger = TokenLedger()
        self._openai = openai
        self._deadline = threading.local()  # the current request's total deadline, per worker thread
        self._client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            http_client=_deadline_http_client(openai, self._deadline),
        )
        self._waiting: dict[int, float] = {}  # request -> when it started, for the progress line
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._jitter = random.Random()
        self._jitter_lock = threading.Lock()
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._failures_in_row = 0
        install_secret_filter(logger, extra=[key if key != _PLACEHOLDER_KEY else None])

    # -- Generator protocol ---------------------------------------------------------------------------------

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig) -> list[list[Completion]]:
        """Send one request per conversation (``n`` candidates each), ``max_concurrency`` at a time.

        One pool of ``max_concurrency`` workers serves every call, also calls from several threads at once: a new
        request starts as soon as any finishes (a sliding window). The request seed is
        ``conversation_seed(sampling.seed, conversation)``, as for the vLLM backend; whether it makes sampling
        reproducible is up to the server (vLLM: yes; OpenAI: best effort).

        A request that fails on its own (retries exhausted, a 400 for that prompt) gives that row an ``error`` or
        ``too_long`` completion (:func:`xl_suite.engines.base.failed_completion`); the other rows go on.

        Raises:
            GenerationError: a failure that concerns every request (401, 403, 404, another non-retryable status),
                or ``max_consecutive_failures`` requests failing in a row; the message names the HTTP status or the
                error type.
        """
        convs = validate_conversations(conversations)
        if not convs:
            return []
        if self._closed:
            raise GenerationError("This OpenAIGenerator is closed.")
        if len(convs) == 1 or self.max_concurrency == 1:
            return [self._row(c, sampling) for c in convs]
        futures = [self._executor().submit(self._row, c, sampling) for c in convs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="xl-suite-http")
            return self._pool

    def _row(self, messages: Messages, sampling: SamplingConfig) -> list[Completion]:
        """One request; a failure of this request alone becomes its row's status."""
        try:
            out = self._complete(messages, sampling)
        except GenerationError as e:
            status = getattr(e, "row_status", None)
            if status is None:
                raise
            with self._jitter_lock:
                self._failures_in_row += 1
                in_row = self._failures_in_row
            if in_row >= self.max_consecutive_failures:
                raise GenerationError(
                    f"{in_row} requests to model {self.model!r} failed in a row; stopping (finished rows are kept, "
                    f"a rerun resumes). The last one: {e}"
                ) from None
            logger.warning("request failed, row marked %r: %s", status, e)
            return [failed_completion(status, str(e))] * sampling.n
        with self._jitter_lock:
            self._failures_in_row = 0
        return out

    def fingerprint(self) -> str:
        """Backend, model name, revision and server URL (never the key)."""
        return stable_hash("openai", self.model, self.revision, self.base_url)

    def supports_structured_output(self) -> bool:
        """JSON schemas go out as ``response_format={"type": "json_schema", ...}`` (strict)."""
        return True

    def close(self) -> None:
        """Close the HTTP client and its worker pool (requests not started are cancelled)."""
        if not self._closed:
            self._closed = True
            self._watch_stop.set()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._client.close()

    def __enter__(self) -> OpenAIGenerator:
        """Use as a context manager; :meth:`close` runs on exit."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the backend."""
        self.close()

    def __repr__(self) -> str:
        """Model and state; never credentials."""
        return f"OpenAIGenerator(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    # -- helpers --------------------------------------------------------------------------------------------

    def request_kwargs(self, messages: Messages, sampling: SamplingConfig) -> dict[str, Any]:
        """The keyword arguments sent to ``chat.completions.create`` for one conversation."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            self.max_tokens_param: sampling.max_tokens,
            "seed": conversation_seed(sampling.seed, messages),
        }
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        if sampling.min_tokens:
            # Not an OpenAI API parameter: vLLM's OpenAI-compatible server reads it from the request body.
            kwargs["extra_body"] = {"min_tokens": sampling.min_tokens}
        if sampling.logprobs is not None:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = sampling.logprobs
        if sampling.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": sampling.json_schema, "strict": True},
            }
        return kwargs

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2**attempt)
        with self._jitter_lock:
            delay = delay / 2 + self._jitter.uniform(0, delay / 2)  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _complete(self, messages: Messages, sampling: SamplingConfig) -> list[Completion]:
        token = object()
        with self._jitter_lock:
            self._waiting[id(token)] = time.monotonic()
        self._start_watch()
        try:
            return self._attempts(messages, sampling)
        finally:
            with self._jitter_lock:
                self._waiting.pop(id(token), None)
            self._deadline.value = None

    def _start_watch(self) -> None:
        """Start the thread that says when requests have been waiting long (once per generator)."""
        with self._pool_lock:
            if self._watch is None and not self._closed:
                self._watch = threading.Thread(target=self._watch_waiting, name="xl-suite-http-watch", daemon=True)
                self._watch.start()

    def _watch_waiting(self) -> None:
        """Every ``progress_every`` seconds, one line about the requests waiting longer than that (a slow or
        trickling server): how many, how long, and when they give up."""
        while not self._watch_stop.wait(self.progress_every):
            now = time.monotonic()
            with self._jitter_lock:
                ages = [now - t for t in self._waiting.values() if now - t >= self.progress_every]
            if ages:
                bound = (
                    f"each gives up after total_timeout={self.total_timeout:g} s"
                    if self.total_timeout is not None
                    else "total_timeout=None: no bound"
                )
                logger.warning(
                    "still waiting for %d request(s) to model %r, the longest for %.0f s (%s)",
                    len(ages),
                    self.model,
                    max(ages),
                    bound,
                )

    def _attempts(self, messages: Messages, sampling: SamplingConfig) -> list[Completion]:
        openai = self._openai
        kwargs = self.request_kwargs(messages, sampling)
        attempt = 0
        deadline = None if self.total_timeout is None else time.monotonic() + self.total_timeout
        while True:
            self.ledger.add(requests=1)
            client = self._client
            if deadline is not None:
                client = client.with_options(timeout=max(0.1, min(self.timeout, deadline - time.monotonic())))
            self._deadline.value = deadline  # also holds for a body that trickles in (see _deadline_http_client)
            try:
                response = client.chat.completions.create(**kwargs)
                break
            except openai.APIStatusError as e:
                error, retryable, what, retry_after = (
                    e,
                    e.status_code in RETRYABLE_STATUS,
                    f"HTTP {e.status_code}",
                    _retry_after(e),
                )
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                error, retryable, what, retry_after = e, True, type(e).__name__, None
            except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as e:
                # An HTTP 200 whose body is not a chat completion (cut off, not JSON): this reply, this row.
                self.ledger.add(requests=0, failures=1)
                raise self._bad_reply(f"a body that is not valid JSON ({_decode_detail(e)})") from None
            delay = self._backoff(attempt, retry_after)
            over_budget = deadline is not None and time.monotonic() + delay >= deadline
            if not retryable or attempt >= self.max_retries or over_budget:
                self.ledger.add(requests=0, failures=1)
                if not retryable:
                    detail = "not retryable"
                elif over_budget:
                    detail = (
                        f"after {attempt} retries, total_timeout={self.total_timeout} s spent; raise "
                        "total_timeout/timeout for a slow server"
                    )
                else:
                    detail = f"after {attempt} retries"
                # `from None`: the client's exception may quote the key (an echoed header); its text is scrubbed here.
                failure = GenerationError(
                    f"OpenAI-compatible request to model {self.model!r} failed with {what} ({detail}): "
                    f"{self._scrub(_short_error(error))}"
                )
                failure.row_status = _row_status(error, retryable)
                if sampling.logprobs is not None and _rejects_logprobs(error):
                    failure = GenerationError(f"{failure} {NO_LOGPROBS_FIX}")  # the setup, not this prompt
                raise failure from None
            attempt += 1
            self.ledger.add(requests=0, retries=1)
            logger.warning(
                "%s from model %r; retry %d/%d in %.2f s", what, self.model, attempt, self.max_retries, delay
            )
            time.sleep(delay)
        return self._to_completions(response, sampling)

    def _scrub(self, text: str) -> str:
        key = getattr(self._client, "api_key", None)
        return scrub_secrets(text, extra=[key if key != _PLACEHOLDER_KEY else None])

    def _bad_reply(self, what: str) -> GenerationError:
        """The error of one reply the server sent with HTTP 200 but that holds no answer: a per-row failure
        (status ``error``, scrubbed message), so the rest of the batch goes on; many in a row stop the run."""
        failure = GenerationError(
            f"OpenAI-compatible request to model {self.model!r} got HTTP 200 with {self._scrub(what)}; the row is "
            "marked 'error' and retried on the next run."
        )
        failure.row_status = RowStatus.ERROR
        return failure

    def _to_completions(self, response, sampling: SamplingConfig) -> list[Completion]:
        if not hasattr(response, "choices"):  # the client hands back the text of a body that is not JSON
            self.ledger.add(requests=0, failures=1)
            raise self._bad_reply(f"a reply that is not a chat completion: {_excerpt(response)}")
        choices = sorted(response.choices or [], key=lambda c: c.index if c.index is not None else 0)
        if len(choices) != sampling.n:
            self.ledger.add(requests=0, failures=1)
            raise self._bad_reply(f"{len(choices)} choices, not n={sampling.n}")
        no_content = [c for c in choices if getattr(c.message, "content", None) is None]
        if no_content:  # a content filter or a refusal: no text for this prompt
            c = no_content[0]
            refusal = getattr(c.message, "refusal", None)
            self.ledger.add(requests=0, failures=1)
            raise self._bad_reply(
                f"no content (finish_reason={c.finish_reason!r}" + (f", refusal={refusal!r}" if refusal else "") + ")"
            )
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage is not None else 0
        total_completion = usage.completion_tokens if usage is not None else 0
        cost = None
        if self.price_per_1k_input is not None:
            cost = prompt_tokens / 1000 * self.price_per_1k_input + total_completion / 1000 * self.price_per_1k_output
        self.ledger.add(requests=0, prompt_tokens=prompt_tokens, completion_tokens=total_completion, cost=cost)
        out = []
        for choice in choices:
            content = choice.message.content
            top = tokens = None
            # An empty completion is a failure, never an answer: marked here, copied by stages to `*_status`.
            extra: dict[str, Any] = {
                "request_completion_tokens": total_completion,
                "status": completion_status(content),
            }
            if extra["status"] != RowStatus.OK:
                logger.warning(
                    "Server returned an empty completion for model %r (finish_reason=%r); marked 'empty'",
                    self.model,
                    choice.finish_reason,
                )
            lp_content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
            if sampling.logprobs is not None:
                if lp_content is None:
                    raise GenerationError(
                        f"The server returned no log-probabilities for model {self.model!r} (asked for the top "
                        f"{sampling.logprobs} per token). {NO_LOGPROBS_FIX}"
                    )
                tokens = [t.token for t in lp_content]
                top = []
                for t in lp_content:
                    alternatives: dict[str, float] = {}
                    for alt in t.top_logprobs or []:
                        alternatives.setdefault(alt.token, float(alt.logprob))
                    top.append(alternatives)
                extra["token_logprobs"] = [float(t.logprob) for t in lp_content]
            if sampling.n == 1:
                completion_tokens = total_completion
            elif lp_content is not None:
                completion_tokens = len(lp_content)
            else:
                completion_tokens = 0  # unknown per candidate; the request total is in extra and the ledger
            out.append(
                Completion(
                    text=content,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=choice.finish_reason,
                    top_logprobs=top,
                    tokens=tokens,
                    extra=extra,
                )
            )
        return out


def _deadline_http_client(openai, local: threading.local):
    """The HTTP client of the OpenAI client, with a total deadline per request that also holds while the body
    arrives: httpx's timeouts bound each read, so a server sending 2 bytes a second never times out on them.

    The deadline is read from ``local.value`` (set by the request's own thread, the one httpx reads the body on);
    past it, the read raises httpx's ``ReadTimeout`` (the client's ``APITimeoutError``), so the request fails with
    ``total_timeout`` like any other timeout.
    """
    import importlib

    base = next(c for c in type.mro(openai.DefaultHttpxClient) if c.__name__ == "Client")
    httpx = importlib.import_module(base.__module__.split(".")[0])  # httpx, or the httpx2 of newer clients

    class DeadlineStream(httpx.SyncByteStream):
        def __init__(self, inner, deadline: float, request):
            self.inner, self.deadline, self.request = inner, deadline, request

        def __iter__(self):
            for chunk in self.inner:
                if time.monotonic() > self.deadline:
                    raise httpx.ReadTimeout("the reply did not arrive within total_timeout", request=self.request)
                yield chunk

        def close(self) -> None:
            self.inner.close()

    class DeadlineClient(openai.DefaultHttpxClient):
        def send(self, request, *, stream: bool = False, **kwargs):
            deadline = getattr(local, "value", None)
            response = super().send(request, stream=True, **kwargs)
            if deadline is not None:
                response.stream = DeadlineStream(response.stream, deadline, request)
            if not stream:
                try:
                    response.read()
                except BaseException:
                    response.close()
                    raise
            return response

    return DeadlineClient()


def _retry_after(error) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _excerpt(value, limit: int = 80) -> str:
    """The start of a reply body, for a message: ``'<html><body>Log in...'``."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _decode_detail(error: BaseException) -> str:
    """What was wrong with a body that did not decode, with its start when known."""
    doc = getattr(error, "doc", None)
    detail = f"{type(error).__name__}: {_short_error(error, 120)}"
    return detail + (f"; the body starts {_excerpt(doc)}" if isinstance(doc, str) else "")


def _short_error(error: BaseException, limit: int = 300) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."
