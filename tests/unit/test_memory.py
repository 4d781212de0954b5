"""The memory model of speed-plan against real models and a real training step."""

from __future__ import annotations

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
