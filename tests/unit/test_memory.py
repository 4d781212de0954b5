"""The memory model of speed-plan against real models and a real training step."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from speed.memory import KNOWN_SHAPES, Shape, Training, find_shape, training_bytes
from tests.hub_models import SHAPES, build_hub_model


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    return {s: build_hub_model(s, root / s, hidden=64, layers=2) for s in SHAPES}


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(
        p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
    )
    moments = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t) and t.dim() > 0  # the step counter is a scalar
    )
    return params, grads + moments


def _one_step(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("shape", SHAPES)
def test_parameter_count_is_exact_for_each_hub_shape(hub, shape):
    model = AutoModelForCausalLM.from_pretrained(hub[shape])
    counted = {id(p): p.numel() for p in model.parameters()}  # tied weights once
    assert find_shape(str(hub[shape])).parameters() == sum(counted.values())


@pytest.mark.parametrize("lora_r", [None, 8])
def test_weights_gradients_and_optimizer_bytes_match_a_real_training_step(hub, lora_r):
    model = AutoModelForCausalLM.from_pretrained(hub["llama3"], dtype=torch.float32)
    if lora_r is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, target_modules="all-linear"))
    params, state = _state_bytes(model, _one_step(model))
    estimate = training_bytes(
        find_shape(str(hub["llama3"])), Training("float32", lora_r, 2, 16, False)
    )
    assert estimate["weights"] == params
    assert estimate["gradients_and_optimizer"] == state


def test_known_bases_have_their_published_sizes():
    billions = {name: Shape(**s).parameters() / 1e9 for name, s in KNOWN_SHAPES.items()}
    assert billions["meta-llama/Meta-Llama-3-8B"] == pytest.approx(8.03, abs=0.005)
    assert billions["mistralai/Mistral-7B-v0.1"] == pytest.approx(7.24, abs=0.005)
    assert billions["Qwen/Qwen2.5-0.5B"] == pytest.approx(0.494, abs=0.001)
    assert billions["Qwen/Qwen2.5-7B"] == pytest.approx(7.62, abs=0.005)
    lora = Shape(**KNOWN_SHAPES["meta-llama/Meta-Llama-3-8B"]).lora_parameters(16)
    assert lora == 41_943_040  # what peft prints for r 16 on all linear layers


def _plan_config(name: str) -> dict:
    from speed.plan import load_config

    return load_config(f"config/{name}.yaml")


def test_the_paper_plan_has_a_memory_line_per_job_both_ways():
    from speed.memory_plan import format_memory, memory_plan

    memory = memory_plan(_plan_config("paper"))
    junior = memory["jobs"]["junior"]
    # Llama-3-8B LoRA r16 in bf16, batch 4 x 4096 tokens: checkpointing is what makes it fit.
    assert junior["checkpointing"] and junior["gib"] == junior["gib_with_checkpointing"]
    assert junior["gib_with_checkpointing"] < 80 < junior["gib_without_checkpointing"]
    assert memory["jobs"]["embedding"]["gib"] < 80  # Mistral-7B, no LM head, no logits
    assert memory["over_limit"] == []
    text = "\n".join(format_memory(memory))
    assert "junior" in text and "synth_raw" in text and "warning" not in text


def test_a_job_over_the_configured_gpu_memory_is_warned_about():
    from speed.memory_plan import format_memory, memory_plan

    config = _plan_config("paper")
    config["junior"]["gradient_checkpointing"] = False
    memory = memory_plan(config)
    assert memory["over_limit"] == ["junior"]
    assert "warning: junior needs about 87.4 GiB" in "\n".join(format_memory(memory))


def test_tiny_models_have_no_estimate_before_they_exist():
    from speed.memory_plan import memory_plan

    assert memory_plan(_plan_config("config"))["jobs"]["junior"] is None


def test_an_embedding_model_has_no_lm_head_or_logits(hub):
    shape = find_shape(str(hub["mistral"]))
    t = Training("float32", 4, batch=2, length=16, checkpointing=False)
    lm, emb = training_bytes(shape, t), training_bytes(shape, replace(t, lm_head=False))
    assert emb["logits"] == 0 and lm["weights"] - emb["weights"] == shape.vocab * shape.hidden * 4
