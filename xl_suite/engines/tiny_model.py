"""A tiny random chat model built locally, for engine-tier tests and the offline demo.

The model is a **meaningless stand-in**: a 2-layer Llama with random weights and a byte-level BPE tokenizer
trained in a fraction of a second on generated multilingual text. It exists so that the real engines (vLLM on
CPU, transformers, an OpenAI-compatible ``vllm serve``) can be exercised end to end without a download. Its
outputs are random token soup; never report numbers produced with it.

Design notes:

* The byte-level alphabet is part of the BPE vocabulary (``initial_alphabet``), so text in *any* script
  tokenizes; the training text mixes Latin with diacritics (German, Hungarian, Lithuanian, Irish, Maltese
  ``ġħż``...), Devanagari and CJK so those scripts also get a few merges.
* ``head_dim=32``: vLLM's CPU attention supports head sizes 32, 64, 80, ... only (16 crashes the engine).
* Everything is derived from ``seed``: the training text, hence the tokenizer, and the weights.
* Importing this module does not import torch, transformers or tokenizers.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from pathlib import Path

from xl_suite.errors import OutputExistsError


logger = logging.getLogger(__name__)

__all__ = ["build_tiny_model", "TINY_MODEL_RECIPE_VERSION", "TINY_CHAT_TEMPLATE", "MARKER_FILE"]

#: Bump when anything below changes the files produced for a given seed.
TINY_MODEL_RECIPE_VERSION = 1
MARKER_FILE = "xl_suite_tiny_model.json"

TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_BOS, _EOS, _PAD, _UNK = "<s>", "</s>", "<pad>", "<unk>"
_SPECIAL_TOKENS = [_BOS, _EOS, _PAD, _UNK, "<|system|>", "<|user|>", "<|assistant|>"]

_VOCAB_SIZE = 1024
_TRAIN_LINES = 6000

# Words per script. Not meant to be correct prose: only to give the BPE trainer each script's characters.
_WORDS = {
    "en": "the answer question please write short story about river city water light model data".split(),
    "de": "Straße über Mädchen schön Grüße größer Fuß Brücke Übersetzung müssen Bäume".split(),
    "hu": "őrült gyönyörű köszönöm fűző tűz szőlő hűtő kérdés válasz nyelv".split(),
    "lt": "ačiū labas ąžuolas čia ėjo įvairus šuo ūkis žemė kalba klausimas".split(),
    "ga": "fáilte Dia dhuit ó é í ú Gaeilge ceist freagra oíche".split(),
    "mt": "ħafna Ġermanja żmien ġurnata ħobż għaliex qalb ħalib żiemel".split(),
    "pt": "ação coração não informação português pão irmã".split(),
    "fr": "français élève où garçon œuvre château".split(),
    "fi": "hyvää päivää kysymys vastaus äiti pöytä".split(),
    "tr": "ğüzel ışık şehir İstanbul çiçek öğrenci".split(),
    "hi": "नमस्ते धन्यवाद भारत हिन्दी भाषा प्रश्न उत्तर पानी शहर कहानी".split(),
    "zh": "你好 谢谢 中文 世界 数据 模型 问题 回答 城市 故事 语言 翻译".split(),
    "sym": ['{"', '":', '"}', "[", "]", ",", ".", "?", "!", "0", "1", "2", "7", "42", "A", "B", "true", "false"],
}


# Letters for pseudo-words, so the trainer finds enough merges to fill the vocabulary in every script.
_ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyzäöüßőűąčęėįšųūžáéíóúġħżçãõœğış",
    "deva": "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौंः्",
    "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 160)),
}


def _pseudo_word(rng: random.Random) -> str:
    alphabet = _ALPHABETS[rng.choice(sorted(_ALPHABETS))]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))


def _training_text(rng: random.Random) -> list[str]:
    """Generate the BPE training lines for one seed: real words from each script plus pseudo-words."""
    scripts = sorted(_WORDS)
    lines = []
    for _ in range(_TRAIN_LINES):
        words = []
        for _ in range(rng.randint(3, 12)):
            if rng.random() < 0.25:
                words.append(_pseudo_word(rng))
            else:
                words.append(rng.choice(_WORDS[rng.choice(scripts)]))
        lines.append(" ".join(words))
    return lines


def _is_built(path: Path, seed: int) -> bool:
    marker = path / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("recipe_version") == TINY_MODEL_RECIPE_VERSION and info.get("seed") == seed


def build_tiny_model(output_dir: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build (or reuse) the tiny random Llama chat model in ``output_dir``.

    The directory is reused when its marker file records the same recipe version and seed. It is rebuilt when
    ``overwrite`` is true or when it holds an older tiny model (different recipe or seed). A non-empty directory
    that was not made by this function is never overwritten unless ``overwrite`` is true.

    Args:
        output_dir: where to save the model (config, safetensors weights, tokenizer, chat template).
        seed: seeds the tokenizer training text and the weights; same seed, same files.
        overwrite: rebuild even if a matching model is already there.

    Returns:
        The model directory, usable as ``model=`` for vLLM, transformers or ``vllm serve``.

    Raises:
        FileExistsError: ``output_dir`` is a non-empty directory that holds something else.
    """
    out = Path(output_dir)
    if not overwrite and _is_built(out, seed):
        logger.debug("Reusing tiny model at %s", out)
        return out
    if out.exists() and not overwrite and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise OutputExistsError(
            f"{out} is not empty and is not a tiny model built by xl_suite; pass overwrite=True or another directory."
        )
    if out.exists() and overwrite and any(out.iterdir()):
        from xl_suite.safety import check_replaceable

        check_replaceable(out, overwrite=True, legacy_markers=(MARKER_FILE,))  # never a folder we did not write

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(seed)
    lines = _training_text(rng)

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_PAD,
        unk_token=_UNK,
        padding_side="left",
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=2048,
    )

    config = tiny_llama_config(
        vocab_size=tok.get_vocab_size(),
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        hf_tok.save_pretrained(staging)
        (staging / "README.md").write_text(
            "# xl-suite tiny model (meaningless stand-in)\n\n"
            "A 2-layer Llama with **random weights** and a toy BPE tokenizer, built locally by "
            "`xl_suite.engines.tiny_model.build_tiny_model` for tests and the offline demo.\n"
            "Its outputs are random tokens. Do not report any result produced with it.\n",
            encoding="utf-8",
        )
        (staging / MARKER_FILE).write_text(
            json.dumps({"recipe_version": TINY_MODEL_RECIPE_VERSION, "seed": seed, "meaningless_stand_in": True}),
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Built tiny model (seed=%d, %d params) at %s", seed, model.num_parameters(), out)
    return out


def tiny_llama_config(*, vocab_size: int = _VOCAB_SIZE, **token_ids):
    """The stand-in's ``LlamaConfig`` (2 layers, hidden size 64, head size 32); ``token_ids``: bos/eos/pad ids."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        # Larger than Llama's 0.02 so that next-token distributions are peaked: greedy decoding then
        # agrees across engines (vLLM vs transformers) instead of hinging on float noise between near-ties.
        initializer_range=0.15,
        torch_dtype="float32",
        **token_ids,
    )
