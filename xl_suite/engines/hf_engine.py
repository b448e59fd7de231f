"""Plain transformers backend: a small fallback where vLLM is unavailable, not the main path.

Batched, left-padded ``model.generate`` over prompts rendered by ``tokenizer.apply_chat_template``. JSON schemas are
not enforced here (:meth:`TransformersGenerator.supports_structured_output` is False, and a ``json_schema`` raises
rather than being ignored). Sampled outputs depend on the batch a prompt is in (one torch seed per batch); greedy
outputs do not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from xl_suite.engines import (
    completion_status,
    is_transformers_available,
    local_model_hash,
    resolve_model,
    strict_kwargs,
    validate_conversations,
)
from xl_suite.engines.base import Completion, Messages, SamplingConfig, TokenLedger
from xl_suite.errors import GenerationError, InvalidArgumentError, MissingDependencyError
from xl_suite.fingerprint import stable_hash


logger = logging.getLogger(__name__)

__all__ = ["TransformersGenerator"]


@strict_kwargs
class TransformersGenerator:
    """transformers ``AutoModelForCausalLM`` implementing :class:`~xl_suite.engines.base.Generator`.

    Args:
        model: local model directory or Hugging Face Hub id.
        revision: Hub revision.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: torch device (``"cpu"``, ``"cuda"``).
        batch_size: conversations per ``generate`` call.
        chat_template: Jinja chat template for models that ship none.
        truncate_prompts: keep the last ``max_position_embeddings - max_tokens`` tokens of a prompt that does not
            fit the model's context (left truncation, as the vLLM backend does) and mark its completions
            ``extra["prompt_truncated"]``; off by default, part of the fingerprint.

    Raises:
        ImportError: transformers or torch is missing.
        ValueError: bad model path, or no chat template.
    """

    backend = "transformers"

    def __init__(
        self,
        model: str | Path,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        batch_size: int = 16,
        chat_template: str | None = None,
        truncate_prompts: bool = False,
    ):
        if not is_transformers_available():
            raise MissingDependencyError(
                "The transformers backend needs torch and transformers: pip install 'xl-suite[tests]'."
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model, local_dir = resolve_model(model)
        self.revision = revision
        self.device = device
        self.batch_size = batch_size
        self._content_hash = local_model_hash(local_dir) if local_dir is not None else None
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, revision=revision, padding_side="left")
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if not self.tokenizer.chat_template:
            raise InvalidArgumentError(
                f"Model {self.model!r} has no chat template. Use an instruct/chat model or pass chat_template=..."
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self._model = AutoModelForCausalLM.from_pretrained(self.model, revision=revision, dtype=torch_dtype)
        self._model.to(device).eval()
        self.dtype = str(self._model.dtype).removeprefix("torch.")
        self.truncate_prompts = bool(truncate_prompts)
        self.max_model_len = getattr(self._model.config, "max_position_embeddings", None)
        if self.truncate_prompts and not self.max_model_len:
            raise InvalidArgumentError(
                f"truncate_prompts: the config of {self.model!r} gives no max_position_embeddings, so the context "
                "to truncate to is unknown. Drop truncate_prompts, or use the vllm backend with max_model_len."
            )
        self.tokenizer.truncation_side = "left"  # used only under truncate_prompts: keep the end of the prompt
        self.ledger = TokenLedger()

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig) -> list[list[Completion]]:
        """Generate ``sampling.n`` completions per conversation, in input order.

        Raises:
            ValueError: ``sampling.json_schema`` is set (not enforceable here).
            GenerationError: the model failed.
        """
        if sampling.json_schema is not None:
            raise InvalidArgumentError(
                "The transformers backend cannot enforce json_schema; use the vllm or openai backend."
            )
        convs = validate_conversations(conversations)
        if self._model is None:
            raise GenerationError("This TransformersGenerator is closed.")
        out: list[list[Completion]] = []
        for start in range(0, len(convs), self.batch_size):
            try:
                out.extend(self._generate_batch(convs[start : start + self.batch_size], sampling, start))
            except GenerationError:
                raise
            except Exception as e:
                raise GenerationError(f"transformers generation failed for model {self.model!r}: {e}") from e
        return out

    def _generate_batch(self, convs: list[Messages], sampling: SamplingConfig, offset: int) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
        # The template already writes BOS; add_special_tokens=False avoids a second one.
        cut = {}
        if self.truncate_prompts:
            limit = max(1, self.max_model_len - sampling.max_tokens)
            lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
            cut = {"truncation": True, "max_length": limit}
            truncated = [n > limit for n in lengths]
        else:
            truncated = [False] * len(texts)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, **cut).to(self.device)
        greedy = sampling.temperature == 0
        gen_kwargs = {
            "max_new_tokens": sampling.max_tokens,
            "min_new_tokens": sampling.min_tokens or None,
            "do_sample": not greedy,
            "num_return_sequences": 1 if greedy else sampling.n,
            "pad_token_id": tok.pad_token_id,
            "return_dict_in_generate": True,
            "output_logits": sampling.logprobs is not None,
        }
        if not greedy:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            torch.manual_seed(sampling.seed + offset)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        with torch.inference_mode():
            result = self._model.generate(**enc, **gen_kwargs)
        prompt_len = enc["input_ids"].shape[1]
        new_tokens = result.sequences[:, prompt_len:]
        logprobs = None
        if sampling.logprobs is not None:
            logprobs = torch.log_softmax(torch.stack(result.logits, dim=1).float(), dim=-1)
        eos_ids = self._eos_ids()
        out = []
        per_prompt = 1 if greedy else sampling.n
        for i in range(len(convs)):
            prompt_tokens = int(enc["attention_mask"][i].sum())
            cands = []
            for j in range(sampling.n):
                row = i * per_prompt + (0 if greedy else j)
                cands.append(self._completion(new_tokens[row], logprobs, row, prompt_tokens, sampling, eos_ids))
                if truncated[i]:
                    cands[-1].extra["prompt_truncated"] = True
            out.append(cands)
        self.ledger.add(
            prompt_tokens=sum(c[0].prompt_tokens for c in out),
            completion_tokens=sum(x.completion_tokens for c in out for x in c),
        )
        return out

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _completion(
        self, ids, logprobs, row: int, prompt_tokens: int, sampling: SamplingConfig, eos_ids
    ) -> Completion:
        tok = self.tokenizer
        ids = ids.tolist()
        finish = "length"
        length = len(ids)
        for k, t in enumerate(ids):
            if t in eos_ids:
                finish, length = "stop", k + 1
                break
            if t == tok.pad_token_id and tok.pad_token_id not in eos_ids:
                length = k
                break
        kept = ids[:length]
        text = tok.decode([t for t in kept if t not in eos_ids], skip_special_tokens=True)
        for s in sampling.stop:
            cut = text.find(s)
            if cut != -1:
                text, finish = text[:cut], "stop"
        top = tokens = None
        if logprobs is not None:
            top, tokens = [], []
            for k, t in enumerate(kept):
                values, indices = logprobs[row, k].topk(sampling.logprobs)
                alts: dict[str, float] = {}
                for v, idx in zip(values.tolist(), indices.tolist(), strict=True):
                    alts.setdefault(tok.decode([idx]), v)
                top.append(alts)
                tokens.append(tok.decode([t]))
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(kept),
            finish_reason=finish,
            top_logprobs=top,
            tokens=tokens,
            extra={"status": completion_status(text)},
        )

    def fingerprint(self) -> str:
        """Backend, model path/id, revision, dtype, for a local dir a content hash, and prompt truncation if on."""
        return stable_hash(
            "transformers",
            self.model,
            self.revision,
            self.dtype,
            self._content_hash,
            *(("truncate_prompts", self.max_model_len) if self.truncate_prompts else ()),
        )

    def supports_structured_output(self) -> bool:
        """JSON schemas are not enforced by this backend."""
        return False

    def close(self) -> None:
        """Drop the model."""
        self._model = None

    def __enter__(self) -> TransformersGenerator:
        """Use as a context manager; :meth:`close` runs on exit."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the backend."""
        self.close()
