"""What SFT and DPO share: the training spec, resumable checkpoint folders, merged outputs, and
the one flow both run (`train_merged`: key the checkpoints, train or resume, save the merged
model with its metrics and model card atomically, drop the checkpoints if asked).

Checkpoints live outside the declared output (under the cache dir): Snakemake deletes a rule's
outputs before it reruns the job, so checkpoints inside them could never be resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from speed.io import atomic_dir, atomic_file
from speed.llm.chat_template import (
    add_stop_ids,
    end_of_turn_id,
    prepare_generator_tokenizer,
    training_template,
)
from speed.llm.fingerprint import fingerprint, write_digest
from speed.train.cards import write_card
from speed.train.distributed import is_main_rank, split_batch, world

# Spec fields that change how often things are written, not which weights come out: they stay
# out of the checkpoint identity, so changing them resumes instead of starting over.
# Cadence and memory settings: a rerun that changes one (checkpointing after an OOM) resumes.
_NOT_IDENTITY = {
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "keep_checkpoints",
    "gradient_checkpointing",
}


@dataclass(frozen=True)
class TrainSpec:
    """Hyper-parameters of one SFT or DPO run (config keys of the same names)."""

    lora: bool = True  # False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_batch_size: int = 4
    gradient_accumulation: int = 4
    max_length: int = 2048
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    save_steps: int = 100
    save_total_limit: int = 2
    # Kept, a rerun after a lost output reloads the final checkpoint instead of training again;
    # dropped, full fine-tuning of a large model frees its optimizer states (2x the weights).
    keep_checkpoints: bool = True
    logging_steps: int = 1  # per-step losses in metrics.json cost nothing
    seed: int = 0
    bf16: bool = False  # mixed precision; a CPU run stays in fp32
    dtype: str = "float32"  # weights as loaded (and saved); "bfloat16" halves memory on a GPU
    gradient_checkpointing: bool = False  # trades ~20% speed for memory on large models
    attn_implementation: str | None = None  # transformers' default kernel (sdpa) when None
    extra: dict[str, Any] = field(default_factory=dict)  # more SFTConfig/DPOConfig kwargs

    @classmethod
    def of(cls, spec: TrainSpec | Mapping[str, Any] | None = None, **overrides: Any) -> TrainSpec:
        """A spec from a spec, a config mapping (unknown keys are an error) or defaults."""
        base = asdict(spec) if isinstance(spec, TrainSpec) else dict(spec or {})
        base.update(overrides)
        unknown = set(base) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        return cls(**base)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _NOT_IDENTITY}

    def trainer_kwargs(self, out_dir: Path) -> dict[str, Any]:
        """The TrainingArguments fields SFTConfig and DPOConfig share; under torch.distributed
        the configured (global) batch is split over the ranks (speed.train.distributed)."""
        import torch

        processes = world()[1]
        per_device, accumulation = split_batch(
            self.per_device_batch_size, self.gradient_accumulation, processes
        )
        return {
            "output_dir": str(out_dir),
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accumulation,
            **ddp_kwargs(processes),
            "max_length": self.max_length,
            # transformers 5 dropped warmup_ratio: a float in [0, 1) is a ratio of total steps.
            "warmup_steps": float(self.warmup_ratio),
            "weight_decay": self.weight_decay,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "logging_steps": self.logging_steps,
            "seed": self.seed,
            "bf16": self.bf16,  # trl defaults it to True, which is wrong on most CPUs
            "gradient_checkpointing": self.gradient_checkpointing,  # trl defaults it to True
            "use_cpu": not torch.cuda.is_available(),
            "model_init_kwargs": self.model_kwargs(),
            "report_to": [],
            **self.extra,
        }

    def model_kwargs(self) -> dict[str, Any]:
        """from_pretrained's keyword arguments for the trained model."""
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def lora_config(self) -> Any:
        from peft import LoraConfig

        if not self.lora:
            return None
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


def ddp_kwargs(processes: int) -> dict[str, Any]:
    """TrainingArguments for a multi-process run: gloo on CPU (accelerate's default backend
    there is not always available), and no search for unused parameters: every LoRA (or full)
    weight takes part in each forward, and the search breaks gradient checkpointing."""
    import torch

    if processes == 1:
        return {}
    return {
        "ddp_backend": None if torch.cuda.is_available() else "gloo",
        "ddp_find_unused_parameters": False,
    }


def data_digest(rows: list[dict[str, Any]]) -> str:
    """Hash of the training rows, in order (the order decides the batches)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def checkpoint_dir(root: str | Path, *identity_parts: Any) -> Path:
    """`root/<hash>`: the hash of everything that decides the trained weights (model
    fingerprints, data digest, spec), so a rerun with the same inputs and params finds its own
    checkpoints, and a changed input never resumes from a stale run."""
    blob = json.dumps(identity_parts, sort_keys=True, default=str)
    path = Path(root) / hashlib.sha256(blob.encode()).hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    ident = path / "identity.json"  # for humans looking into the cache
    if not ident.exists():
        with atomic_file(ident) as f:
            f.write(blob + "\n")
    return path


def _step(p: Path) -> int:
    m = re.fullmatch(r"checkpoint-(\d+)", p.name)
    return int(m.group(1)) if m else -1


def find_resume(path: str | Path) -> Path | None:
    """The newest complete `checkpoint-N`: the Trainer writes trainer_state.json last, so a
    checkpoint killed mid-save has none (or a truncated one) and is skipped."""
    root = Path(path)
    if not root.is_dir():
        return None
    for ckpt in sorted((p for p in root.iterdir() if _step(p) >= 0), key=_step, reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return ckpt
    return None


def run_trainer(trainer: Any, ckpt_dir: Path, log: logging.Logger) -> int | None:
    """Train, resuming from the newest complete checkpoint in `ckpt_dir` if there is one;
    returns the step resumed from (the checkpoint itself may be rotated away meanwhile)."""
    from transformers import TrainerState

    resume = find_resume(ckpt_dir)
    if resume is None:
        log.info("training from scratch; checkpoints in %s", ckpt_dir)
        trainer.train()
        return None
    state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    if state.max_steps > 0 and state.global_step >= state.max_steps:
        # A finished run (killed while saving the output, or the output was deleted). Resuming
        # it would train one step too many: the Trainer fast-forwards to the end and checks
        # for the last step only after the next one. Load the final weights instead.
        log.info("%s is the end of training (step %d): loading it", resume.name, state.global_step)
        trainer._load_from_checkpoint(str(resume))
        trainer.state = state
    else:
        log.info("resuming from %s at step %d", resume.name, state.global_step)
        trainer.train(resume_from_checkpoint=str(resume))
    return state.global_step


def finish(spec: TrainSpec, ckpt_dir: Path, log: logging.Logger) -> None:
    """Called once the output is in place."""
    if not spec.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("removed checkpoints %s", ckpt_dir)


def generator_tokenizer(model: str, chat_template: str | Path | None = None) -> tuple[Any, str]:
    """A generator's tokenizer for training, and where its chat template comes from: the
    `chat_template` file, the model's own template when it has generation markers, else the
    project's (speed.llm.chat_template); a pad token (EOS) where the model has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    template, source = training_template(tokenizer, chat_template)
    prepare_generator_tokenizer(tokenizer, template)
    return tokenizer, source


def template_digest(tokenizer: Any) -> str:
    """Checkpoint identity part: the template decides the trained tokens."""
    return hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()[:16]


def merge_and_save(model: Any, tokenizer: Any, out_dir: str | Path) -> None:
    """A plain model folder: LoRA merged into the weights, so AutoModelForCausalLM and vLLM
    load it without peft, and the next stage can put its own LoRA on top. The tokenizer keeps
    the chat template trained with; its end-of-turn token joins generation_config's EOS ids, so
    both engines stop on it without a flag. The digest manifest is written last, so the next
    job keys the model without rehashing its weights (metrics.json, written after it, does not
    count)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    eot = end_of_turn_id(tokenizer, tokenizer.chat_template)
    add_stop_ids(model.generation_config, tokenizer.eos_token_id, eot)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    write_digest(out_dir)


def write_metrics(
    out_dir: str | Path,
    trainer: Any,
    resumed_step: int | None,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json beside the model: the Trainer's log_history (restored across a resume, so it
    covers every step) and summary fields."""
    history = trainer.state.log_history
    steps = [h for h in history if "loss" in h]
    metrics = {
        "global_step": trainer.state.global_step,
        "resumed_from_step": resumed_step,
        "first_loss": steps[0]["loss"] if steps else None,
        "last_loss": steps[-1]["loss"] if steps else None,
        **summary,
        "log_history": history,
    }
    with atomic_file(Path(out_dir) / "metrics.json") as f:
        json.dump(metrics, f, indent=2, default=str)
        f.write("\n")
    return metrics


def train_merged(
    kind: str,
    model: str,
    rows: list[dict[str, Any]],
    spec: TrainSpec,
    make_trainer: Callable[[Path], Any],
    out_dir: str | Path,
    checkpoint_root: str | Path,
    log: logging.Logger,
    *,
    identity: Sequence[Any] = (),
    summary: Callable[[Any], dict[str, Any]] | None = None,
    card: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """The flow SFT and DPO share. Checkpoints go to a folder under `checkpoint_root` keyed by
    `kind`, the fingerprint of `model` (the one trained from), the digest of `rows` (what is
    trained on), further `identity` parts and the spec; `make_trainer(checkpoint folder)` builds
    the trainer, which trains or resumes from the newest complete checkpoint there. Then, in one
    atomic `out_dir`: the merged model and tokenizer, metrics.json (`kind`, `summary(trainer)`,
    the checkpoint folder, the spec, the world size) and the model card `card(metrics)`.
    Returns the metrics (on rank 0; {} on the other ranks of a distributed run)."""
    ckpt = checkpoint_dir(
        checkpoint_root, kind, fingerprint(model), data_digest(rows), *identity, spec.identity()
    )
    trainer = make_trainer(ckpt)
    resumed = run_trainer(trainer, ckpt, log)
    if not is_main_rank():
        return {}  # rank 0 writes the output
    extra = summary(trainer) if summary is not None else {}
    fields_ = {
        "kind": kind,
        **extra,
        "world_size": world()[1],
        "checkpoints": str(ckpt),
        "spec": asdict(spec),
    }
    with atomic_dir(out_dir) as tmp:
        merge_and_save(
            trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class, tmp
        )
        metrics = write_metrics(tmp, trainer, resumed, fields_)
        if card is not None:
            write_card(tmp, card(metrics))
    finish(spec, ckpt, log)
    return metrics
