"""speed-plan's memory lines: the peak GPU memory of each training and generation job of a
config (speed.memory's model), with and without gradient checkpointing, against the configured
`resources.gpu.gpu_mem_gib`."""

from __future__ import annotations

from typing import Any

from speed.memory import GIB, Shape, Training, find_shape, generation_bytes, gib, training_bytes
from speed.workflow import model_path

GENERATORS = {"junior": False, "senior": True, "revisor": False}  # section -> DPO?
GENERATION_JOBS = ("candidates", "synth_raw", "synth_revised")


def _training(section: dict[str, Any], checkpointing: bool, **kw: Any) -> Training:
    return Training(
        dtype=section.get("dtype", "float32"),
        lora_r=section["lora_r"] if section.get("lora", True) else None,
        batch=section["per_device_batch_size"],
        length=section["max_length"],
        checkpointing=checkpointing,
        **kw,
    )


def _estimate(shape: Shape, make: Any, checkpointing: bool) -> dict[str, Any]:
    """GiB with the configured checkpointing, and both ways."""
    both = {ckpt: gib(training_bytes(shape, make(ckpt))) for ckpt in (False, True)}
    return {
        "gib": round(both[checkpointing], 1),
        "gib_without_checkpointing": round(both[False], 1),
        "gib_with_checkpointing": round(both[True], 1),
        "checkpointing": checkpointing,
    }


def _generation(config: dict[str, Any], shape: Shape) -> dict[str, Any]:
    """Weights plus the KV cache: vLLM's is `kv_cache_gib`; transformers' holds one batch at
    the longest answer (prompt and answer at max_model_len's worth, a bound)."""
    engine = config["generation"]["backend"]
    opts = config["backends"][engine]
    weights = generation_bytes(shape, _dtype(opts.get("dtype", "auto")), 0)["weights"]
    if engine == "vllm" and opts.get("kv_cache_gib") is None:
        # vLLM takes its share of the device and sizes the cache from what the weights leave.
        share = opts.get("gpu_memory_utilization") or 0.9
        limit = config["resources"]["gpu"].get("gpu_mem_gib")
        weights_gib = round(weights / GIB, 1)
        if limit is None:
            return {"gib": weights_gib, "engine": "vllm, weights only (KV cache: its share)"}
        return {"gib": round(share * limit, 1), "engine": f"vllm, {share:g} of the GPU"}
    if engine == "vllm":
        kv = opts["kv_cache_gib"] * GIB
    else:
        tokens = opts["batch_size"] * config["backends"]["vllm"]["max_model_len"]
        kv = generation_bytes(shape, _dtype(opts.get("dtype", "auto")), tokens)["kv_cache"]
    return {"gib": round((weights + kv) / GIB, 1), "engine": engine}


def _dtype(name: str) -> str:
    return name if name in ("float32", "bfloat16", "float16") else "bfloat16"  # auto: the hub's


def memory_plan(config: dict[str, Any]) -> dict[str, Any]:
    """Per job: its estimate, or why there is none (a tiny model is built at run time; a base
    whose config.json is neither local nor a known shape)."""
    jobs: dict[str, Any] = {}
    base = config["generation"]["base"]
    shape = None if "tiny" in config["models"][base] else find_shape(model_path(config, base))
    for section, dpo in GENERATORS.items():
        cfg = config[section]

        def make(ckpt: bool, cfg: dict[str, Any] = cfg, dpo: bool = dpo) -> Training:
            return _training(cfg, ckpt, dpo=dpo)

        ckpt = cfg.get("gradient_checkpointing", False)
        jobs[section] = _estimate(shape, make, ckpt) if shape else None
    for job in GENERATION_JOBS:
        jobs[job] = _generation(config, shape) if shape else None
    emb = config["embedding"]
    emb_shape = find_shape(emb["base"]) if emb["kind"] == "decoder" else None
    if emb_shape is not None:
        section = {**emb, "lora": True, "per_device_batch_size": emb["mini_batch_size"]}
        jobs["embedding"] = _estimate(
            emb_shape,
            lambda c: _training(section, c, lm_head=False),
            emb.get("gradient_checkpointing", False),
        )
    limit = config["resources"]["gpu"].get("gpu_mem_gib")
    over = [j for j, e in jobs.items() if e and limit and e["gib"] > limit]
    return {"jobs": jobs, "gpu_mem_gib": limit, "over_limit": over}


def format_memory(memory: dict[str, Any]) -> list[str]:
    lines = [
        "peak GPU memory per job (estimate, GiB; weights, LoRA/optimizer state, activations at "
        "the configured batch and length, logits; no CUDA context or fragmentation: add 1-2 GiB):"
    ]
    for job, e in memory["jobs"].items():
        if e is None:
            lines.append(f"  {job:<14}unknown (tiny model built at run time, or unknown shape)")
        elif "gib_with_checkpointing" in e:
            on = "on" if e["checkpointing"] else "off"
            lines.append(
                f"  {job:<14}{e['gib']:>7.1f}  (checkpointing {on}; without "
                f"{e['gib_without_checkpointing']:.1f}, with {e['gib_with_checkpointing']:.1f})"
            )
        else:
            lines.append(f"  {job:<14}{e['gib']:>7.1f}  ({e['engine']}: weights + KV cache)")
    for job in memory["over_limit"]:
        lines.append(
            f"warning: {job} needs about {memory['jobs'][job]['gib']:.1f} GiB, more than "
            f"resources.gpu.gpu_mem_gib = {memory['gpu_mem_gib']:g}"
        )
    return lines
