"""Generation throughput: vLLM vs transformers backends on the same model and batch, and
vLLM fed 64-sample calls vs whole-shard calls.

    python benchmarks/generation.py [--requests 32] [--max-tokens 128] [--eager]
    python benchmarks/generation.py --calls [--shard 512] [--layers 24] [--dtype bfloat16]

Models (random weights, built in a temp dir on the tiny tokenizer): the tiny Llama (float32)
and a Qwen2.5-0.5B-shaped Qwen2 (bfloat16; its real 151936 vocab shrunk to the tokenizer's).
Each (model, backend) runs in its own subprocess: one vLLM engine per process, fresh memory.
Throughput is completion tokens / wall time of whole `generate` calls (after a warm-up call
of the same batch size, repeated until 5 s); engine start is reported apart. Sampled at
temperature 1 with per-request seeds, so both backends see the same requests.

`--calls`: one shard of `--shard` fresh requests through LLMClient and a fresh call cache, as
synth_raw runs it, on the Qwen2.5-0.5B-shaped model (speed.memory.KNOWN_SHAPES; `--layers`
fewer than its 24 for a CPU), once in calls of 64 samples (the client's old unit) and once in
one call of the whole shard; each mode gets its own requests (no cache hit) after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed.llm.schema import string_fields

SCHEMA = string_fields({"query": 40, "document": 40})
MODELS = {"tiny-llama": "float32", "qwen2.5-0.5b-shape": "bfloat16"}


def build_models(root: Path, names: list[str], layers: int | None = None) -> None:
    from speed.models.tiny import build_llama, build_tokenizer

    build_tokenizer(root / "tokenizer", vocab_size=1024)
    if "tiny-llama" in names:
        build_llama(root / "tiny-llama", root / "tokenizer", 64, 2, 2, seed=12)
    if "qwen2.5-0.5b-shape" in names:
        build_qwen(root / "qwen2.5-0.5b-shape", root / "tokenizer", layers)


def build_qwen(out: Path, tokenizer: Path, layers: int | None) -> None:
    """Random weights in Qwen2.5-0.5B's shape (its real 151936 vocab shrunk to the tokenizer's);
    `layers` None: all 24."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from speed.memory import KNOWN_SHAPES

    shape = KNOWN_SHAPES["Qwen/Qwen2.5-0.5B"]
    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=layers or shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        tie_word_embeddings=shape["tied"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)


def requests(k: int, max_tokens: int, schema: dict | None, tag: str = "") -> list:
    from speed.llm.types import Request, Sampling

    return [
        Request.chat(
            [{"role": "user", "content": f"Write a query and a document, example {tag}{i}."}],
            Sampling(temperature=1.0, max_tokens=max_tokens, seed=i),
            schema,
        )
        for i in range(k)
    ]


def worker(model: str, dtype: str, backend: str, k: int, max_tokens: int, eager: bool) -> dict:
    """Runs in a subprocess; returns its measurements as one JSON line on stdout."""
    start = time.perf_counter()
    if backend == "vllm":
        from speed.llm.vllm_backend import VLLMBackend

        llm = VLLMBackend(
            model, dtype=dtype, max_model_len=1024, kv_cache_gib=2, enforce_eager=eager
        )
    else:
        from speed.llm.transformers_backend import TransformersBackend

        llm = TransformersBackend(model, dtype=dtype, batch_size=k)
    result: dict = {"start_s": time.perf_counter() - start}
    for mode, schema in (("free", None), ("schema", SCHEMA)):
        # Warm-up at the measured batch size: vLLM's compiled graph and the grammar compiler
        # pay one-time costs on the first batch of a new shape.
        llm.generate(requests(k, 16, schema))
        tokens = valid = runs = 0
        wall = 0.0
        while wall < 5.0:  # repeat sub-second runs (the tiny model) for a stabler rate
            t = time.perf_counter()
            outs = llm.generate(requests(k, max_tokens, schema))
            wall += time.perf_counter() - t
            tokens += sum(c.completion_tokens for cs in outs for c in cs)
            valid += sum(
                isinstance(c.parsed, dict) and set(c.parsed) == set(SCHEMA["properties"])
                for cs in outs
                for c in cs
            )
            runs += 1
        result[mode] = {"tokens": tokens // runs, "tok_s": tokens / wall, "valid": valid // runs}
        result[mode]["runs"] = runs
    llm.close()
    return result


def calls_worker(model: str, dtype: str, shard: int, max_tokens: int, eager: bool) -> dict:
    """Runs in a subprocess: one shard through the client in 64-sample calls, then whole."""
    from speed.llm.cache import CompletionCache
    from speed.llm.client import LLMClient
    from speed.llm.vllm_backend import VLLMBackend

    llm = VLLMBackend(model, dtype=dtype, max_model_len=1024, kv_cache_gib=2, enforce_eager=eager)
    result: dict = {"max_num_seqs": llm.max_num_seqs, "chunk_size": llm.chunk_size}
    llm.generate(requests(min(shard, llm.max_num_seqs), 8, None, "warm-up "))
    for mode, size in (("64-sample calls", 64), ("whole-shard calls", shard)):
        llm.chunk_size = size  # what the client sends per call and commits per cache write
        with tempfile.TemporaryDirectory() as cache_dir:
            client = LLMClient(llm, CompletionCache(Path(cache_dir) / "completions"))
            start = time.perf_counter()
            outs = client.generate(requests(shard, max_tokens, None, f"{mode} "))
            wall = time.perf_counter() - start
        tokens = sum(c.completion_tokens for cs in outs for c in cs)
        result[mode] = {"calls": -(-shard // size), "tokens": tokens, "tok_s": tokens / wall}
    llm.close()
    return result


def run_worker(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        sys.exit(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT ") :])


def main_calls(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        name = "qwen2.5-0.5b-shape"
        build_models(Path(tmp), [name], args.layers)
        cmd = ["--calls-worker", str(Path(tmp) / name), args.dtype, "--shard", str(args.shard)]
        cmd += ["--max-tokens", str(args.max_tokens)] + (["--eager"] * args.eager)
        res = run_worker(cmd)
    small, whole = res["64-sample calls"], res["whole-shard calls"]
    print(
        f"\nvLLM, Qwen2.5-0.5B shape with {args.layers or 24} layers ({args.dtype}), one shard "
        f"of {args.shard} samples x max_tokens {args.max_tokens} through LLMClient and a fresh "
        f"cache; engine max_num_seqs {res['max_num_seqs']} (the backend's chunk_size would be "
        f"{res['chunk_size']}); tokens/s = completion tokens / wall\n"
    )
    for mode, r in (("64-sample calls", small), ("whole-shard calls", whole)):
        print(f"{mode:<20}{r['calls']:>4} calls {r['tokens']:>8} tokens {r['tok_s']:>9.1f} tok/s")
    print(f"whole-shard / 64-sample: {whole['tok_s'] / small['tok_s']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--eager", action="store_true", help="vLLM without torch.compile")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--calls", action="store_true", help="64-sample vs whole-shard calls")
    ap.add_argument("--shard", type=int, default=512, help="--calls: samples in the shard")
    ap.add_argument("--layers", type=int, help="--calls: fewer layers than the 24 (a CPU)")
    ap.add_argument("--dtype", default="bfloat16", help="--calls: the model's dtype on vLLM")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL_DIR", "DTYPE", "BACKEND"))
    ap.add_argument("--calls-worker", nargs=2, metavar=("MODEL_DIR", "DTYPE"))
    args = ap.parse_args()
    if args.worker or args.calls_worker:
        if args.worker:
            out = worker(*args.worker, args.requests, args.max_tokens, args.eager)
        else:
            out = calls_worker(*args.calls_worker, args.shard, args.max_tokens, args.eager)
        print("RESULT " + json.dumps(out), flush=True)
        return
    if args.calls:
        main_calls(args)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_models(root, args.models)
        for name in args.models:
            res = {}
            for backend in ("vllm", "transformers"):
                cmd = ["--worker", str(root / name), MODELS[name], backend]
                cmd += ["--requests", str(args.requests), "--max-tokens", str(args.max_tokens)]
                res[backend] = run_worker(cmd + ["--eager"] * args.eager)
                print(f"{name} {backend}: {res[backend]}", file=sys.stderr, flush=True)
            rows.append((name, res))

    print(
        f"\n{args.requests} requests x max_tokens {args.max_tokens}, temperature 1; "
        f"vLLM {'eager' if args.eager else 'compiled'}; tokens/s = completion tokens / wall; "
        "tokens and valid JSON per run\n"
    )
    head = f"{'model':<20}{'mode':<8}{'vllm tok/s':>11}{'hf tok/s':>10}{'vllm/hf':>9}"
    head += f"{'tokens v/hf':>14}{'valid v/hf':>12}{'start s v/hf':>14}"
    print(head)
    print("-" * len(head))
    for name, res in rows:
        v, h = res["vllm"], res["transformers"]
        for mode in ("free", "schema"):
            print(
                f"{name:<20}{mode:<8}{v[mode]['tok_s']:>11.1f}{h[mode]['tok_s']:>10.1f}"
                f"{v[mode]['tok_s'] / h[mode]['tok_s']:>9.2f}"
                f"{v[mode]['tokens']:>7}/{h[mode]['tokens']:<6}"
                f"{v[mode]['valid']:>6}/{h[mode]['valid']:<5}"
                f"{v['start_s']:>7.0f}/{h['start_s']:<.0f}"
            )


if __name__ == "__main__":
    main()
