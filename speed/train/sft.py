"""Supervised fine-tuning on chat examples, loss on the assistant answer only (SPEED stages 5, 10).

The output is a MERGED full model (LoRA folded into the weights) with its tokenizer, not an
adapter. Two reasons:
- DPO needs the junior itself as the frozen reference. With peft the reference is "the policy with
  its adapter disabled", which is only the junior if the junior is the base weights: so the
  senior's LoRA must sit on a merged junior, not on top of the junior's own adapter.
- vLLM (and the transformers backend) then serve every generator as a plain model folder, with
  no adapter plumbing per stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speed.train.cards import CardFacts, generator_card
from speed.train.common import TrainSpec, generator_tokenizer, template_digest, train_merged

_log = logging.getLogger(__name__)


def sft_trainer(
    base_model: str,
    examples: list[dict[str, Any]],
    output_dir: str | Path,
    spec: TrainSpec | Mapping[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    chat_template: str | Path | None = None,
) -> Any:
    """An SFTTrainer on `examples` ({"messages": [...]} ending with the assistant answer), with
    the chat template of speed.train.common.generator_tokenizer (`chat_template`: a file that
    overrides it)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    spec = TrainSpec.of(spec)
    tokenizer, _ = generator_tokenizer(base_model, chat_template)
    # Only the messages: other keys (ids, provenance) would confuse trl's format detection.
    dataset = Dataset.from_list([{"messages": e["messages"]} for e in examples])
    config = SFTConfig(
        **spec.trainer_kwargs(Path(output_dir)),
        # The template's `{% generation %}` markers: the prompt, the system text and the role
        # headers are labelled -100, so the model learns to answer (and to stop), not to ask.
        assistant_only_loss=True,
    )
    return SFTTrainer(
        model=base_model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=spec.lora_config(),
        callbacks=callbacks,
    )


def train_sft(
    base_model: str,
    examples: list[dict[str, Any]],
    out_dir: str | Path,
    checkpoint_root: str | Path,
    spec: TrainSpec | Mapping[str, Any] | None = None,
    log: logging.Logger | None = None,
    callbacks: list[Any] | None = None,
    card: Mapping[str, Any] | None = None,
    chat_template: str | Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `base_model` on `examples`; write the merged model, tokenizer (with the chat
    template trained with: `chat_template`, a file, else the base's own when it has generation
    markers, else the project's), metrics.json and the model card (README.md; `card`: the
    rule's card params, speed.train.cards.CardFacts) to `out_dir` (atomically). Checkpoints go
    to a folder under `checkpoint_root` keyed by the base model's fingerprint, the examples,
    the template and the spec; a rerun resumes from the newest one. Returns the metrics."""
    log = log or _log
    spec = TrainSpec.of(spec)
    if not examples:
        raise ValueError("no SFT examples")
    rows = [{"messages": e["messages"]} for e in examples]  # what is trained on, no more
    facts = CardFacts.of(card, base_model)
    tokenizer, source = generator_tokenizer(base_model, chat_template)
    log.info("chat template: %s", source)
    metrics = train_merged(
        "sft",
        base_model,
        rows,
        spec,
        lambda ckpt: sft_trainer(base_model, rows, ckpt, spec, callbacks, chat_template),
        out_dir,
        checkpoint_root,
        log,
        identity=(template_digest(tokenizer),),
        summary=lambda _: {"examples": len(examples), "chat_template": source},
        card=lambda m: generator_card(facts, "sft", spec, m),
    )
    if not metrics:  # not rank 0 of a distributed run
        return metrics
    log.info(
        "SFT done: %d steps, loss %s -> %s",
        metrics["global_step"],
        metrics["first_loss"],
        metrics["last_loss"],
    )
    return metrics
