"""Teacher API throughput under a tight rate limit: a fixed pool vs the adaptive limiter.

    python benchmarks/teacher_api.py [--requests 90] [--rpm 30] [--minute-s 10] [--pool 16]

Both run the synchronous OpenAI backend through LLMClient (a fresh call cache each) against
the OpenAI-contract server (tests/openai_contract.py) in front of vLLM with the tiny teacher:
a per-key requests-per-minute limit (a "minute" of `--minute-s` seconds, so a run is short),
refused requests counting toward it as OpenAI documents, and long-tail latencies (the same
seeded draw for both: most answers after ~0.3 s, one in ten after 2-6 s). The fixed pool keeps
`--pool` requests in flight and waits out each 429's Retry-After; the adaptive one has `--pool`
as its ceiling, halves on a 429 and paces starts by the x-ratelimit headers. Printed: wall
time, 429s received (and their share of all requests sent), requests/s, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from speed.llm.cache import CompletionCache
from speed.llm.client import LLMClient
from speed.llm.openai_backend import OpenAIBackend
from speed.llm.types import Request, Sampling
from tests.openai_contract import ContractServer
from tests.servers import free_port, serve, vllm_server_cmd

KEY_ENV = "SPEED_BENCH_CONTRACT_KEY"


def long_tail(seed: int):
    rng = random.Random(seed)

    def delay() -> float:
        if rng.random() < 0.1:
            return rng.uniform(2.0, 6.0)
        return rng.lognormvariate(-1.2, 0.4)  # median 0.3 s

    return delay


def run(api: ContractServer, mode: str, args: argparse.Namespace, root: Path) -> dict:
    key = f"sk-bench{mode}{time.monotonic_ns()}"
    api.add_key(key, rpm=args.rpm)
    os.environ[KEY_ENV] = key
    api.faults.clear()
    api.fault("slow", delay_s=long_tail(args.seed))
    mark = len(api.log)
    backend = OpenAIBackend(
        "gpt-4o-mini",
        api.url,
        KEY_ENV,
        max_concurrency=args.pool,
        max_attempts=100,
        response_format="none",
        adaptive=mode == "adaptive",
    )
    prompts = [
        Request.chat(
            [{"role": "user", "content": f"Name a {mode} thing, number {i}."}],
            Sampling(max_tokens=8, seed=i),
        )
        for i in range(args.requests)
    ]
    client = LLMClient(backend, CompletionCache(root / mode))
    start = time.perf_counter()
    client.generate(prompts)
    wall = time.perf_counter() - start
    client.cache.close()
    sent = api.log[mark:]
    limited = sum(e.status == 429 for e in sent)
    return {
        "wall_s": wall,
        "sent": len(sent),
        "limited": limited,
        "rps": args.requests / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=90)
    parser.add_argument("--rpm", type=int, default=30)
    parser.add_argument("--minute-s", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from speed.models.tiny import build_llama, build_tokenizer

        build_tokenizer(root / "tokenizer", vocab_size=1024)
        build_llama(root / "teacher", root / "tokenizer", 128, 2, 4, seed=11)
        port = free_port()
        cmd = vllm_server_cmd(str(root / "teacher"), port, served_name="tiny-teacher")
        with (
            serve(cmd, f"http://127.0.0.1:{port}/v1/models", root / "vllm.log", timeout_s=300),
            ContractServer(f"http://127.0.0.1:{port}/v1", "tiny-teacher", args.minute_s) as api,
        ):
            rate = args.rpm / args.minute_s
            print(
                f"{args.requests} requests, limit {args.rpm} per {args.minute_s:g} s "
                f"({rate:g}/s), pool {args.pool}, long-tail latencies"
            )
            results = {mode: run(api, mode, args, root) for mode in ("fixed", "adaptive")}
    for mode, r in results.items():
        print(
            f"{mode:>8}: {r['wall_s']:6.1f} s, {r['limited']:4d} 429s "
            f"({100 * r['limited'] / r['sent']:.1f}% of {r['sent']} sent), {r['rps']:.2f} req/s"
        )
    ratio = results["adaptive"]["rps"] / results["fixed"]["rps"]
    print(f"adaptive / fixed throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
