"""Model presets: Llama-style decoder-only transformers built from a ``transformers`` config.

Llama's block is RMSNorm -> attention with rotary positions -> RMSNorm -> SwiGLU MLP, which is
what we want at every size; building on ``LlamaForCausalLM`` means our checkpoints load in any
tool that reads Hugging Face directories and ``generate()`` works on them unchanged.

Sizes (parameters with tied embeddings, at the vocabulary sizes below):

=======  =======  ======  =======  =====  ======  ======================================
preset   n_layer  n_embd  n_head   block  vocab   meant for
=======  =======  ======  =======  =====  ======  ======================================
tiny     2        96      4        128    512     tests (~0.27M parameters)
small    4        256     4        256    4096    ~20 min on 2 CPU cores (~4.2M)
base     12       768     12       1024   32000   a GPU (~110M)
=======  =======  ======  =======  =====  ======  ======================================

``small`` has four heads of 64. Two heads of 128 trained about 4% more tokens a second on 2
CPU cores and were the preset for one session, but same-session A/Bs favour four heads
(BENCHMARKS.md, "Training speed"): 20 minutes on tinyshakespeare (BPE), best validation loss
4.426 against 4.436 with 4% fewer steps; 1,000 steps of mixed text, held-out 5.837 against
5.872 and WikiText-2 5.981 against 6.071 nats/token. Only a 5-minute run favoured two heads
(4.530 against 4.596).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lm.errors import LMError


@dataclass(frozen=True)
class Preset:
    """Shape of one model size (nanoGPT names)."""

    n_layer: int
    n_embd: int
    n_head: int
    block_size: int
    vocab_size: int  # tokenizer size to train for this preset (BPE)
    mlp_ratio: float = 8 / 3  # SwiGLU hidden = ratio * n_embd, as in Llama
    # Training defaults that suit the size.
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100

    def intermediate_size(self) -> int:
        hidden = int(self.mlp_ratio * self.n_embd)
        return (hidden + 15) // 16 * 16  # multiples of 16 keep matmuls vectorised

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(2, 96, 4, 128, 512, batch_size=8, learning_rate=3e-3, warmup_steps=10),
    "small": Preset(4, 256, 4, 256, 4096, batch_size=16, learning_rate=2e-3, warmup_steps=100),
    "base": Preset(12, 768, 12, 1024, 32000, batch_size=32, learning_rate=6e-4, warmup_steps=2000),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise LMError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def build_config(preset: Preset, vocab_size: int, **overrides: Any) -> Any:
    """A ``LlamaConfig`` for ``preset`` with the tokenizer's real vocabulary size."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=preset.n_embd,
        intermediate_size=preset.intermediate_size(),
        num_hidden_layers=preset.n_layer,
        num_attention_heads=preset.n_head,
        num_key_value_heads=preset.n_head,
        max_position_embeddings=preset.block_size,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=0.02,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def build_model(config: Any) -> Any:
    """A freshly initialised causal LM (fp32, SDPA attention) for ``config``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
