"""Peak GPU memory of training and generation jobs, estimated before anything runs (speed-plan).

The model, stated here and in speed-plan's output, counts bytes of a decoder-only transformer
with grouped-query attention and a gated MLP (Llama, Qwen2, Mistral):

- weights: every parameter at the load dtype (4 bytes float32, 2 bfloat16/float16);
- trainable state: LoRA adapters (all linear layers of the blocks: r x (in + out) each) or, for
  full fine-tuning, every weight; each trainable parameter holds its gradient and AdamW's two
  moments at its own dtype (peft keeps adapters in float32 on a 16-bit base);
- activations per token and layer, kept for the backward pass, at the compute dtype:
  attention `(4 h + 2 kv)` and MLP `(h + 3 i)` values (inputs of every matmul, its outputs where a
  later op needs them; fused attention kernels keep no s x s scores), `(4 h + 2 kv + h + 3 i)` in
  all; with gradient checkpointing only each layer's input (h) is kept, plus one layer's full set
  while it is recomputed;
- the logits: batch x length x vocab in float32 (losses upcast them), the largest single tensor
  of a 128K-vocab model; DPO runs the policy and the reference on chosen and rejected: 2x the
  batch, weights once more for the frozen reference unless it is the LoRA base;
- generation: weights plus the KV cache, 2 x layers x kv x tokens in flight at the dtype; vLLM
  takes a configured share of the device instead.

It omits CUDA context, allocator fragmentation and framework workspaces (about 1-2 GiB on a
real GPU), so it is a floor: plan with headroom. tests/unit/test_memory.py checks the parameter,
gradient and optimizer bytes against a real training step, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3

# Public shapes of the bases the shipped configs name, for plans made before any download.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B": dict(
        vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, tied=False
    ),
    "mistralai/Mistral-7B-v0.1": dict(
        vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, tied=False
    ),
    "Qwen/Qwen2.5-0.5B": dict(
        vocab=151936,
        hidden=896,
        layers=24,
        heads=14,
        kv_heads=2,
        intermediate=4864,
        tied=True,
        qkv_bias=True,
    ),
    "Qwen/Qwen2.5-7B": dict(
        vocab=152064,
        hidden=3584,
        layers=28,
        heads=28,
        kv_heads=4,
        intermediate=18944,
        tied=False,
        qkv_bias=True,
    ),
}


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of one block's linear layers: q, k, v, o, gate, up, down."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def parameters(self) -> int:
        block = sum(a * b for a, b in self.linears()) + 2 * self.hidden  # + two norms
        block += (self.hidden + 2 * self.kv_dim) if self.qkv_bias else 0
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * block + self.hidden  # + the final norm

    def lora_parameters(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linears())


def shape_of_hf_config(cfg: dict[str, Any]) -> Shape:
    """A Shape from a transformers config.json."""
    heads = cfg["num_attention_heads"]
    return Shape(
        vocab=cfg["vocab_size"],
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        intermediate=cfg["intermediate_size"],
        tied=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=cfg.get("model_type") == "qwen2",
    )


def find_shape(model: str) -> Shape | None:
    """The shape of a hub id or local folder: its config.json (the folder, or the local HF cache),
    else the table of known bases; None when neither knows it."""
    config = Path(model) / "config.json"
    if not config.exists():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        config = Path(cached) if isinstance(cached, str) else None
    if config is not None:
        return shape_of_hf_config(json.loads(config.read_text()))
    known = KNOWN_SHAPES.get(model)
    return Shape(**known) if known else None


@dataclass(frozen=True)
class Training:
    dtype: str  # the weights' dtype as loaded
    lora_r: int | None  # None: full fine-tuning
    batch: int  # sequences per device per step
    length: int  # tokens per sequence
    checkpointing: bool
    dpo: bool = False
    lm_head: bool = True  # False: an embedding model (no LM head, no logits)


def training_bytes(shape: Shape, t: Training) -> dict[str, int]:
    """The estimate's parts for one training process (see the module docstring)."""
    size = DTYPE_BYTES[t.dtype]
    head = 0 if t.lm_head or shape.tied else shape.vocab * shape.hidden
    weights = (shape.parameters() - head) * size
    if t.lora_r is None:  # gradient + 2 AdamW moments per weight, at its dtype
        state = (shape.parameters() - head) * size * 3
        weights *= 2 if t.dpo else 1  # DPO's frozen reference is a second copy
    else:  # float32 adapters (the reference is the base without them) + their state
        adapters = shape.lora_parameters(t.lora_r) * 4
        weights += adapters
        state = adapters * 3
    sequences = t.batch * (2 if t.dpo else 1)  # chosen and rejected
    tokens = sequences * t.length
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    per_layer = (5 * h + 2 * kv + 3 * i) * size
    if t.checkpointing:
        activations = tokens * (shape.layers * h * size + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    logits = tokens * shape.vocab * 4 if t.lm_head else 0
    return {
        "weights": weights,
        "gradients_and_optimizer": state,
        "activations": activations,
        "logits": logits,
    }


def generation_bytes(shape: Shape, dtype: str, tokens_in_flight: int) -> dict[str, int]:
    size = DTYPE_BYTES[dtype]
    return {
        "weights": shape.parameters() * size,
        "kv_cache": 2 * shape.layers * shape.kv_dim * tokens_in_flight * size,
    }


def gib(parts: dict[str, int]) -> float:
    return sum(parts.values()) / GIB
