"""DPO of the merged junior into the senior (SPEED stage 8).

The reference policy is the frozen junior. The junior is a merged plain model (see
speed.train.sft), so the LoRA trained here sits directly on its weights, and trl's reference is
the same model with the adapter disabled: no second copy of the weights in memory. The output is
merged again, so vLLM serves the senior as a plain model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speed.train.cards import CardFacts, generator_card
from speed.train.common import TrainSpec, generator_tokenizer, template_digest, train_merged

_log = logging.getLogger(__name__)
PAIR_KEYS = ("prompt", "chosen", "rejected")

# Per-step DPO diagnostics copied into metrics.json's summary (last logged value of each).
DPO_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def dpo_trainer(
    policy_model: str,
    pairs: list[dict[str, Any]],
    output_dir: str | Path,
    beta: float,
    spec: TrainSpec | Mapping[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A DPOTrainer on `pairs` ({"prompt": [messages], "chosen": [assistant message],
    "rejected": [assistant message]})."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    spec = TrainSpec.of(spec)
    # The junior's saved template (it has markers): the pairs are rendered as the junior saw
    # its prompts. The completion mask, not the pad id, decides the labels (pad may be EOS).
    tokenizer, _ = generator_tokenizer(policy_model)
    dataset = Dataset.from_list([{k: p[k] for k in PAIR_KEYS} for p in pairs])
    config = DPOConfig(**spec.trainer_kwargs(Path(output_dir)), beta=beta)
    # With a peft_config and no ref_model, trl computes the reference log-probs with the adapter
    # disabled, i.e. with the junior's own weights. Full fine-tuning (lora=False) makes trl load
    # a second, frozen copy of the junior as the reference instead.
    return DPOTrainer(
        model=policy_model,
        ref_model=None,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=spec.lora_config(),
        callbacks=callbacks,
    )


def train_dpo(
    policy_model: str,
    pairs: list[dict[str, Any]],
    out_dir: str | Path,
    checkpoint_root: str | Path,
    beta: float = 0.1,
    spec: TrainSpec | Mapping[str, Any] | None = None,
    log: logging.Logger | None = None,
    callbacks: list[Any] | None = None,
    card: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """DPO of `policy_model` (the merged junior, also the reference) on preference `pairs`;
    write the merged senior, tokenizer, metrics.json and the model card to `out_dir`
    (atomically; `card` as in train_sft: its base_model is the junior's base, else
    `policy_model`). Checkpoints and resume as in train_sft, keyed by the policy's fingerprint,
    the pairs, beta and the spec. Returns the metrics."""
    log = log or _log
    spec = TrainSpec.of(spec)
    if not pairs:
        raise ValueError("no DPO pairs")
    facts = CardFacts.of(card, policy_model)
    tokenizer, source = generator_tokenizer(policy_model)
    metrics = train_merged(
        "dpo",
        policy_model,
        [{k: p[k] for k in PAIR_KEYS} for p in pairs],
        spec,
        lambda ckpt: dpo_trainer(policy_model, pairs, ckpt, beta, spec, callbacks),
        out_dir,
        checkpoint_root,
        log,
        identity=(beta, template_digest(tokenizer)),
        summary=lambda trainer: {**_summary(trainer, len(pairs)), "chat_template": source},
        card=lambda m: generator_card(facts, "dpo", spec, m, beta=m["beta"]),
    )
    if not metrics:  # not rank 0 of a distributed run
        return metrics
    last = metrics["last"]
    log.info(
        "DPO done: %d steps, last margin %s, accuracy %s",
        metrics["global_step"],
        last.get("rewards/margins"),
        last.get("rewards/accuracies"),
    )
    return metrics


def _summary(trainer: Any, pairs: int) -> dict[str, Any]:
    """metrics.json's DPO fields: the pair count, beta as the trainer saw it, and the last
    logged value of each diagnostic."""
    steps = [h for h in trainer.state.log_history if "rewards/margins" in h]
    last = {k: steps[-1].get(k) for k in DPO_KEYS} if steps else {}
    return {"pairs": pairs, "beta": trainer.args.beta, "last": last}
