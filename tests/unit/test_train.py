"""SFT and DPO on the tiny Llama: merged outputs, assistant-only loss, metrics, kill -9 resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from speed.llm.types import Request, Sampling
from speed.train.common import TrainSpec, checkpoint_dir, find_resume
from speed.train.dpo import train_dpo
from speed.train.sft import sft_trainer, train_sft

# Few, small steps: the tiny model trains in well under a second per step on 2 cores.
FAST = {"per_device_batch_size": 4, "gradient_accumulation": 1, "max_length": 256}


def chat(i: int) -> dict:
    answer = json.dumps({"query": f"short query {i}", "document": f"document number {i}"})
    return {
        "messages": [
            {"role": "system", "content": "Answer with one JSON object."},
            {"role": "user", "content": f"Write a retrieval example about topic {i}."},
            {"role": "assistant", "content": answer},
        ]
    }


EXAMPLES = [chat(i) for i in range(16)]
PAIRS = [
    {
        "prompt": ex["messages"][:2],
        "chosen": ex["messages"][2:],
        "rejected": [{"role": "assistant", "content": f"sorry, no JSON for topic {i}"}],
    }
    for i, ex in enumerate(EXAMPLES[:8])
]


def weights(model_dir: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def sft_out(tiny_models, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sft")
    spec = {**FAST, "max_steps": 4, "learning_rate": 5e-3}
    metrics = train_sft(tiny_models["base"], EXAMPLES, root / "junior", root / "ckpt", spec)
    return root / "junior", metrics


def test_sft_output_is_a_merged_model_with_metrics(sft_out, tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics = sft_out
    assert not (out / "adapter_config.json").exists()  # merged: no peft needed to load it
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(out))
    assert AutoTokenizer.from_pretrained(out).chat_template
    saved = json.loads((out / "metrics.json").read_text())
    losses = [h for h in saved["log_history"] if "loss" in h]
    assert [h["step"] for h in losses] == [1, 2, 3, 4]
    assert saved["global_step"] == 4 and saved["kind"] == "sft" and saved["examples"] == 16
    assert metrics["last_loss"] == losses[-1]["loss"]
    # The LoRA was merged into the base weights, which changed.
    base = weights(tiny_models["base"])
    assert any(not base[k].equal(v) for k, v in weights(out).items())


def test_assistant_only_mask(tiny_models, tmp_path):
    """Labels of a collated batch: exactly the assistant answer and its end token."""
    trainer = sft_trainer(tiny_models["base"], EXAMPLES[:2], tmp_path, FAST)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, (ids, labels) in enumerate(zip(batch["input_ids"], batch["labels"], strict=True)):
        kept = [int(t) for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert tok.decode(kept) == EXAMPLES[i]["messages"][2]["content"] + "<|end|>"
        # The kept tokens are one contiguous span at the end of the sequence.
        where = (labels != -100).nonzero().flatten().tolist()
        assert where == list(range(where[0], where[0] + len(where)))
        assert "Write a retrieval example" in tok.decode(ids)


@pytest.mark.slow
def test_sft_overfits_four_examples(tiny_models, tmp_path):
    spec = {**FAST, "max_steps": 30, "learning_rate": 1e-2, "save_steps": 1000}
    metrics = train_sft(tiny_models["base"], EXAMPLES[:4], tmp_path / "m", tmp_path / "c", spec)
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses


def test_full_finetuning(tiny_models, tmp_path):
    spec = {**FAST, "lora": False, "max_steps": 2, "learning_rate": 1e-3, "keep_checkpoints": False}
    metrics = train_sft(tiny_models["base"], EXAMPLES[:4], tmp_path / "m", tmp_path / "c", spec)
    assert metrics["global_step"] == 2
    assert not Path(metrics["checkpoints"]).exists()  # keep_checkpoints=False
    base, tuned = weights(tiny_models["base"]), weights(tmp_path / "m")
    # Every linear layer moved, not just a LoRA's low-rank slice of some.
    assert not base["model.layers.0.mlp.down_proj.weight"].equal(
        tuned["model.layers.0.mlp.down_proj.weight"]
    )


@pytest.fixture(scope="module")
def dpo_out(sft_out, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dpo")
    spec = {**FAST, "max_steps": 3, "learning_rate": 5e-3}
    metrics = train_dpo(str(sft_out[0]), PAIRS, root / "senior", root / "ckpt", 0.25, spec)
    return root / "senior", metrics


def test_dpo_metrics_and_weights(dpo_out, sft_out):
    from transformers import AutoModelForCausalLM

    out, metrics = dpo_out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["beta"] == 0.25 and saved["kind"] == "dpo" and saved["pairs"] == 8
    logged = [h for h in saved["log_history"] if "loss" in h]
    assert [h["step"] for h in logged] == [1, 2, 3]
    assert all("rewards/margins" in h and "rewards/accuracies" in h for h in logged)
    # Step 1 scores the policy before any update: it equals the reference, so margins are 0.
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert saved["last"]["rewards/margins"] == logged[-1]["rewards/margins"]
    AutoModelForCausalLM.from_pretrained(out)
    assert not (out / "adapter_config.json").exists()
    junior = weights(sft_out[0])
    assert any(not junior[k].equal(v) for k, v in weights(out).items())


def test_checkpoint_dir_and_find_resume(tmp_path):
    a = checkpoint_dir(tmp_path, "sft", "fp1", TrainSpec().identity())
    assert a == checkpoint_dir(tmp_path, "sft", "fp1", TrainSpec(save_steps=7).identity())
    assert a != checkpoint_dir(tmp_path, "sft", "fp2", TrainSpec().identity())
    assert a != checkpoint_dir(tmp_path, "sft", "fp1", TrainSpec(learning_rate=1).identity())
    assert find_resume(a) is None
    for step, state in [(2, "{}"), (4, "{}"), (6, '{"trunc')]:  # 6: killed mid-save
        (a / f"checkpoint-{step}").mkdir()
        (a / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (a / "checkpoint-8").mkdir()  # killed before trainer_state.json
    assert find_resume(a) == a / "checkpoint-4"
    with pytest.raises(ValueError, match="unknown training parameters"):
        TrainSpec.of({"lr": 1})


RESUME_SCRIPT = """
import json, logging, sys, time
from transformers import TrainerCallback
from speed.train.sft import train_sft

logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)
base, out, ckpt, slow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "slow"

class Slow(TrainerCallback):  # time for the test to kill it between checkpoints
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(1.0)

examples = [json.loads(line) for line in open(sys.argv[5])]
spec = {"per_device_batch_size": 4, "gradient_accumulation": 1, "max_length": 256,
        "max_steps": 10, "save_steps": 2, "learning_rate": 5e-3}
train_sft(base, examples, out, ckpt, spec, callbacks=[Slow()] if slow else None)
"""


def start_until_checkpoint(
    cmd: list[str], ckpt: Path, log: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.Popen:
    """A training process started with `cmd`, returned (still running) once a complete
    checkpoint is under `ckpt`; its output goes to `log`."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not list(ckpt.glob("*/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_resume_after_sigkill(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    out, ckpt = tmp_path / "junior", tmp_path / "ckpt"

    def cmd(mode: str) -> list[str]:
        return [
            sys.executable,
            str(script),
            tiny_models["base"],
            str(out),
            str(ckpt),
            mode,
            str(data),
        ]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = start_until_checkpoint(cmd("slow"), ckpt, tmp_path / "first.log", env)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the output appears only when training finished
    resume = find_resume(next(ckpt.iterdir()))
    assert resume is not None
    step = int(resume.name.split("-")[1])
    assert step < 10

    second = subprocess.run(cmd("fast"), capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from checkpoint-{step} at step {step}" in second.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == step and metrics["global_step"] == 10
    # The restored log_history covers the steps before the kill as well as after it.
    assert [h["step"] for h in metrics["log_history"] if "loss" in h] == list(range(1, 11))
    AutoModelForCausalLM.from_pretrained(out)
    # Resumed = uninterrupted: same data order, optimizer, scheduler and RNG state.
    spec = {**FAST, "max_steps": 10, "save_steps": 2, "learning_rate": 5e-3}
    train_sft(tiny_models["base"], EXAMPLES, tmp_path / "straight", tmp_path / "ckpt2", spec)
    straight = weights(tmp_path / "straight")
    for name, tensor in weights(out).items():
        assert tensor.allclose(straight[name], atol=1e-6), name


# Fit until it answers each training prompt with its own training answer. Full fine-tuning:
# the random tiny model under LoRA learns the right argmax too, but by margins of ~0.2 logits
# (its lm_head and norms stay frozen), too thin to hold across engines; full weights give ~2.5.
FIT = EXAMPLES[:4]
FIT_SPEC = {
    **FAST,
    "lora": False,
    "max_steps": 80,
    "learning_rate": 1e-2,
    "save_steps": 1000,
    "keep_checkpoints": False,
}


@pytest.fixture(scope="module")
def fitted(tiny_models, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("fit")
    metrics = train_sft(tiny_models["base"], FIT, root / "model", root / "ckpt", FIT_SPEC)
    return root / "model", metrics


def greedy(backend, examples: list[dict]) -> list:
    """One greedy completion per example's prompt (system and user messages)."""
    out = backend.generate(
        [Request.chat(ex["messages"][:2], Sampling(0.0, 1.0, 48, seed=0)) for ex in examples]
    )
    return [done for [done] in out]


def assert_answers_its_training_examples(completions: list, examples: list[dict]) -> None:
    """Each prompt gets the exact answer it was trained on (prompts differ only in a number,
    so the model must read it), as the JSON object with the keys the examples have."""
    for done, ex in zip(completions, examples, strict=True):
        target = ex["messages"][2]["content"]
        assert done.text == target and done.finish_reason == "stop", (done.text, target)
        assert json.loads(done.text) == json.loads(target)
        assert set(json.loads(done.text)) == {"query", "document"}


def test_the_fitted_model_learned_its_examples(fitted):
    _, metrics = fitted
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 80
    # From about ln(vocab) (a random model) to a small fraction of it.
    assert losses[0] > 5.0 and losses[-1] < losses[0] / 50, (losses[0], losses[-1])


@pytest.mark.slow
def test_sft_output_generates_with_vllm(fitted):
    pytest.importorskip("vllm")
    from speed.llm.vllm_backend import VLLMBackend

    backend = VLLMBackend(
        str(fitted[0]), dtype="float32", max_model_len=1024, kv_cache_gib=1, enforce_eager=True
    )
    try:
        done = greedy(backend, FIT)
    finally:
        backend.close()
    assert all(d.prompt_tokens > 0 for d in done)
    assert_answers_its_training_examples(done, FIT)


def test_sft_output_generates_with_transformers(fitted, tiny_models):
    backend_module = pytest.importorskip("speed.llm.transformers_backend")
    backend = backend_module.TransformersBackend(str(fitted[0]), batch_size=2)
    try:
        done = greedy(backend, FIT)
    finally:
        backend.close()
    assert_answers_its_training_examples(done, FIT)
    # The untrained base does not: the answers come from the training.
    base = backend_module.TransformersBackend(tiny_models["base"], batch_size=4)
    try:
        untrained = greedy(base, FIT)
    finally:
        base.close()
    assert all(d.text != ex["messages"][2]["content"] for d, ex in zip(untrained, FIT, strict=True))
