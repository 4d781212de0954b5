"""In-process vLLM: batched generation, LoRA adapters, JSON-schema structured outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from speed.llm.chat_template import PROJECT_TEMPLATE, own_template
from speed.llm.fingerprint import fingerprint
from speed.llm.types import Completion, Request, parse_structured

# Samples per `generate` call (the client commits each call's answers to the cache), as a
# multiple of the sequences the engine keeps in flight. A call of exactly max_num_seqs drains
# to an ever-emptier batch before the next call refills it; with 4x as many waiting, finished
# sequences are replaced at once until the last quarter, so the engine runs near full while a
# kill loses at most one call (seconds to minutes of GPU time).
CALLS_PER_ENGINE_BATCH = 4


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VLLMBackend:
    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        dtype: str = "auto",
        max_model_len: int = 2048,
        kv_cache_gib: float | None = 1.0,
        max_lora_rank: int = 16,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool | None = None,
    ):
        """kv_cache_gib None: the KV cache is what `gpu_memory_utilization` of the device leaves
        after the weights. None for max_num_seqs, max_num_batched_tokens or prefix caching:
        vLLM's default for the device (on an H100, 1024 sequences and 16384 tokens a step)."""
        if kv_cache_gib is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
        # The engine core in this process: no spawned child that re-imports a Snakemake script.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.adapter = adapter
        # What decides an answer: the weights (content, not path: a moved or copied model keeps
        # its cache entries), the precision, the context length (it cuts answers short) and the
        # seed of unseeded requests. The rest are knobs (speed/llm/knobs.py): no part of the key.
        self.identity = {
            "engine": "vllm",
            "model_hash": fingerprint(model),
            "adapter_hash": fingerprint(adapter),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "seed": seed,
        }
        self.llm = LLM(
            model=str(model),
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=None if kv_cache_gib is None else int(kv_cache_gib * 2**30),
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
            enable_lora=adapter is not None,
            max_lora_rank=max_lora_rank,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            # On CPU, eager skips the inductor compile (tens of seconds at start) for slower steps.
            enforce_eager=enforce_eager,
            # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded
            # request's prefill is split across steps; whole prefills avoid that path.
            enable_chunked_prefill=False if _on_cpu() else None,
            # xgrammar lets raw control characters into JSON strings; guidance does not.
            structured_outputs_config={"backend": "guidance", "disable_any_whitespace": True},
        )
        # The engine's own value when the config left it to vLLM. LLMClient sends (and commits)
        # chunk_size samples per call.
        self.max_num_seqs: int = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self.chunk_size = self.max_num_seqs * CALLS_PER_ENGINE_BATCH
        # A folder trained here carries its template and lists its end-of-turn token among the
        # generation config's EOS ids, which vLLM stops on; a base without one (never trained
        # here) is served with the project's (speed.llm.chat_template).
        has_own = own_template(self.llm.get_tokenizer()) is not None
        self._chat_template = None if has_own else PROJECT_TEMPLATE
        self._lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(Path(adapter).name, 1, str(adapter))

    def _params(self, request: Request) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = request.sampling
        return SamplingParams(
            n=request.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            seed=s.seed,
            structured_outputs=(
                StructuredOutputsParams(json=request.schema, disable_any_whitespace=True)
                if request.schema is not None
                else None
            ),
        )

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        if not requests:
            return []
        start = time.perf_counter()
        outputs = self.llm.chat(
            [list(r.messages) for r in requests],
            sampling_params=[self._params(r) for r in requests],
            lora_request=self._lora,
            chat_template=self._chat_template,
            use_tqdm=False,
        )
        latency = (time.perf_counter() - start) / len(requests)
        results = []
        for request, out in zip(requests, outputs, strict=True):
            prompt_tokens = len(out.prompt_token_ids or [])
            results.append(
                [
                    Completion(
                        text=o.text,
                        finish_reason=o.finish_reason,
                        prompt_tokens=prompt_tokens if i == 0 else 0,
                        completion_tokens=len(o.token_ids),
                        parsed=parse_structured(o.text, request.schema),
                        latency_s=latency,
                    )
                    for i, o in enumerate(out.outputs)
                ]
            )
        return results

    def close(self) -> None:
        del self.llm
