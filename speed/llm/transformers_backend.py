"""In-process transformers `generate`: batched with left padding, LoRA adapters, JSON-schema
constrained decoding with llguidance (the engine behind vLLM's `guidance` backend).

The fallback where vLLM is not installed. All per-row decisions (grammar mask, temperature,
top_p, seeded sampling, each request's own max_tokens) live in one logits processor and
`generate` runs greedy over its output: HF's own sampler draws from one global RNG for the whole
batch, so a request's samples would depend on which other requests share its batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from speed.llm.chat_template import PROJECT_TEMPLATE, eos_ids, own_template
from speed.llm.fingerprint import fingerprint
from speed.llm.types import Completion, Request, parse_structured


@dataclass
class _Row:
    """One sample of one request: a row of a generate batch."""

    request: int  # index into the caller's requests
    sample: int  # 0..n-1
    prompt_ids: list[int]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    grammar: str | None


def _row_seed(seed: int, sample: int) -> int:
    # A distinct, stable stream per (seed, sample): sample 1 of seed 0 is not sample 0 of seed 1.
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample}".encode()).digest()[:8], "little") >> 1


class _RowProcessor:
    """A transformers LogitsProcessor for one batch. Called once per decoding step with the
    tokens so far; it advances each row's grammar matcher by the token picked last step, masks
    the logits to what the grammar allows, and for sampled rows draws the token itself and
    leaves only it (so `generate`'s greedy pick is that draw)."""

    def __init__(self, rows: list[_Row], matchers: list[Any], stop_ids: set[int], eos_id: int):
        import llguidance

        self.rows, self.matchers, self.stop_ids, self.eos_id = rows, matchers, stop_ids, eos_id
        self.done = [False] * len(rows)
        self.truncated = [False] * len(rows)  # hit its own max_tokens before the batch's max
        self.step = 0
        self.generators: list[torch.Generator | None] = [None] * len(rows)
        self.executor = llguidance.LLExecutor() if any(m is not None for m in matchers) else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self.step > 0:
            for r, tok in enumerate(input_ids[:, -1].tolist()):
                if self.done[r]:
                    continue
                if tok in self.stop_ids:
                    self.done[r] = True
                elif self.matchers[r] is not None:
                    # Cannot fail: the token was drawn under this matcher's own mask.
                    self.matchers[r].consume_token(tok)
        live = [r for r in range(len(self.rows)) if not self.done[r]]
        if self.executor is not None:
            self._mask([r for r in live if self.matchers[r] is not None], scores)
        for r in live:
            row = self.rows[r]
            if self.step == row.max_tokens:  # its own budget is spent: end it here
                self.truncated[r] = self.done[r] = True
                self._force(scores, r, self.eos_id)
            elif row.temperature > 0:
                self._force(scores, r, self._sample(r, scores[r]))
        self.step += 1
        return scores

    def _mask(self, rows: list[int], scores: torch.Tensor) -> None:
        if not rows:
            return
        from llguidance.torch import fill_next_token_bitmask_par

        n_words = (scores.shape[1] + 31) // 32
        bitmask = torch.full((len(scores), n_words), -1, dtype=torch.int32)
        fill_next_token_bitmask_par(self.executor, [(self.matchers[r], r) for r in rows], bitmask)
        # Unpack 32 bits per int32 word in plain torch: llguidance.torch's apply kernel is
        # torch.compile'd, which on CPU means a C++ toolchain and seconds of compile time.
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((bitmask[rows].unsqueeze(-1) >> bits) & 1).bool().flatten(1)
        allowed = allowed[:, : scores.shape[1]].to(scores.device)
        idx = torch.tensor(rows, device=scores.device)
        scores[idx] = scores[idx].masked_fill(~allowed, float("-inf"))

    def _sample(self, r: int, logits: torch.Tensor) -> int:
        row = self.rows[r]
        if self.generators[r] is None:
            self.generators[r] = torch.Generator(device=logits.device).manual_seed(row.seed)
        probs = torch.softmax(logits.float() / row.temperature, dim=-1)
        if row.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= row.top_p
            probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
        return int(torch.multinomial(probs, 1, generator=self.generators[r]))

    @staticmethod
    def _force(scores: torch.Tensor, r: int, token: int) -> None:
        scores[r] = float("-inf")
        scores[r, token] = 0.0


class TransformersBackend:
    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        dtype: str = "float32",
        batch_size: int = 16,
        seed: int = 0,
        device: str | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # What decides an answer: the weights (content, not path: a moved or copied model keeps
        # its cache entries), the precision and the seed of unseeded requests; `batch_size` is a
        # knob (speed/llm/knobs.py): each row is decoded on its own, whatever shares its batch.
        self.identity = {
            "engine": "transformers",
            "model_hash": fingerprint(model),
            "adapter_hash": fingerprint(adapter),
            "dtype": dtype,
            "seed": seed,
        }
        self.adapter = adapter
        self.batch_size = batch_size
        self.seed = seed
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.tokenizer.padding_side = "left"  # decoder-only: prompts end where generation starts
        net = AutoModelForCausalLM.from_pretrained(str(model), dtype=getattr(torch, dtype))
        if adapter is not None:
            from peft import PeftModel

            # Merged once: the same function as the unmerged adapter, without its per-layer cost.
            net = PeftModel.from_pretrained(net, str(adapter)).merge_and_unload()
        self.model = net.to(self.device).eval()
        if own_template(self.tokenizer) is None:  # a base never trained here: the project's
            self.tokenizer.chat_template = PROJECT_TEMPLATE
        # Every EOS id of the generation config (Llama 3 lists several; a trained folder lists
        # its template's end-of-turn token there) ends a row, as in vLLM.
        self.eos_id = self.tokenizer.eos_token_id
        self.stop_ids = {self.eos_id, *eos_ids(self.model.generation_config)} - {None}
        if self.tokenizer.pad_token is None:  # e.g. Llama 3: pad with EOS, the mask hides it
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.pad_token_id
        self._ll_tokenizer: Any = None
        self._grammars: dict[str, str] = {}

    def _grammar(self, schema: dict[str, Any]) -> str:
        import llguidance
        import llguidance.hf

        if self._ll_tokenizer is None:  # ~1 s to build: once per backend, only if needed
            self._ll_tokenizer = llguidance.hf.from_tokenizer(
                self.tokenizer,
                n_vocab=max(self.model.config.vocab_size, len(self.tokenizer)),
                eos_token=sorted(self.stop_ids),
            )
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            # Compact JSON, as vLLM's guidance backend with disable_any_whitespace.
            self._grammars[key] = llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults={"whitespace_flexible": False}
            )
        return self._grammars[key]

    def _matcher(self, grammar: str) -> Any:
        import llguidance

        matcher = llguidance.LLMatcher(self._ll_tokenizer, grammar, log_level=1)
        if matcher.is_error():
            raise ValueError(f"llguidance rejects the schema: {matcher.get_error()}")
        return matcher

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        if not requests:
            return []
        start = time.perf_counter()
        prompts = [
            self.tokenizer.apply_chat_template(
                list(r.messages), add_generation_prompt=True, tokenize=False
            )
            for r in requests
        ]
        # The template writes its own BOS: no second one from the tokenizer (as vLLM's chat).
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        rows = [
            _Row(
                i,
                k,
                prompt_ids[i],
                r.sampling.temperature,
                r.sampling.top_p,
                r.sampling.max_tokens,
                _row_seed(self.seed if r.sampling.seed is None else r.sampling.seed, k),
                self._grammar(r.schema) if r.schema is not None else None,
            )
            for i, r in enumerate(requests)
            for k in range(r.n)
        ]
        # Similar lengths share a batch: less padding. Results go back to their request below.
        order = sorted(range(len(rows)), key=lambda j: len(rows[j].prompt_ids))
        outputs: dict[int, tuple[list[int], str]] = {}
        for b in range(0, len(order), self.batch_size):
            batch = [rows[j] for j in order[b : b + self.batch_size]]
            for j, out in zip(order[b : b + self.batch_size], self._run(batch), strict=True):
                outputs[j] = out
        latency = (time.perf_counter() - start) / len(requests)
        results: list[list[Completion]] = [[] for _ in requests]
        for j, row in enumerate(rows):
            tokens, finish = outputs[j]
            text = self.tokenizer.decode(
                [t for t in tokens if t not in self.stop_ids], skip_special_tokens=True
            )
            schema = requests[row.request].schema
            results[row.request].append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=len(row.prompt_ids) if row.sample == 0 else 0,
                    completion_tokens=len(tokens),
                    parsed=parse_structured(text, schema),
                    latency_s=latency,
                )
            )
        return results

    @torch.inference_mode()
    def _run(self, batch: list[_Row]) -> list[tuple[list[int], str]]:
        """Generated tokens (with the stop token, as vLLM counts them) and finish reason."""
        from transformers import GenerationConfig, LogitsProcessorList

        enc = self.tokenizer.pad(
            {"input_ids": [row.prompt_ids for row in batch]}, return_tensors="pt"
        ).to(self.device)
        processor = _RowProcessor(
            batch,
            [self._matcher(row.grammar) if row.grammar else None for row in batch],
            self.stop_ids,
            self.eos_id,
        )
        # A fresh config: the model's own generation_config (a checkpoint's repetition_penalty,
        # top_k, do_sample) must not silently change what a Request asked for.
        config = GenerationConfig(
            max_new_tokens=max(row.max_tokens for row in batch),
            do_sample=False,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
        )
        out = self.model.generate(
            **enc, generation_config=config, logits_processor=LogitsProcessorList([processor])
        )
        results = []
        for r, seq in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
            end = next((i for i, t in enumerate(seq) if t in self.stop_ids), None)
            if processor.truncated[r]:  # the EOS we forced at its max_tokens is not its own
                results.append((seq[:end], "length"))
            elif end is not None:
                results.append((seq[: end + 1], "stop"))
            else:
                results.append((seq, "length"))
        return results

    def close(self) -> None:
        del self.model
