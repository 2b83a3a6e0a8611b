"""Tokenizers trained on the user's corpus and saved as Hugging Face tokenizers.

Two kinds, both returned as ``PreTrainedTokenizerFast`` so they save next to the model with
``save_pretrained`` and load with ``AutoTokenizer``:

* ``train_bpe_tokenizer``: byte-level BPE (every byte is in the alphabet, so no input is ever
  unknown), the default for real corpora;
* ``build_char_tokenizer``: one token per character seen in the corpus, as nanoGPT's
  shakespeare-char does, used by the benchmark for a like-for-like comparison.

Both carry the chat special tokens and a chat template, so ``apply_chat_template`` works on a
model we trained exactly as on any Hub chat model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lm.errors import DataError

PAD = "<|pad|>"
EOS = "<|endoftext|>"
UNK = "<|unk|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
SPECIAL_TOKENS = [PAD, EOS, UNK, SYSTEM, USER, ASSISTANT, END]

#: Each message is ``<|role|>\ncontent<|end|>\n``; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _wrap(tok: Any, model_max_length: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT, END],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _batches(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, model_max_length: int = 2048
) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (an iterable of documents or lines).

    Args:
        texts: training text; iterated once.
        vocab_size: target size including the 256 byte symbols and the special tokens.
        model_max_length: recorded in the tokenizer config (the model's context).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise DataError(f"vocab_size {vocab_size} is too small for byte-level BPE (min 264)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return _wrap(tok, model_max_length)


def build_char_tokenizer(text: str, model_max_length: int = 2048) -> Any:
    """One token per distinct character of ``text`` (plus the special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = sorted(set(text))
    if not chars:
        raise DataError("cannot build a character tokenizer from empty text")
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Split every character into its own "word" so WordLevel maps characters, not words.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok, model_max_length)


def load_tokenizer(path: str | Path) -> Any:
    """Load the tokenizer saved in a model directory (no network)."""
    from transformers import AutoTokenizer

    from lm.errors import CheckpointError

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many types for a broken directory
        raise CheckpointError(f"cannot load the tokenizer in {path}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
