"""Embedding training cost: cached vs plain MultipleNegativesRankingLoss, MiniLM, per batch size.

    python benchmarks/embedding.py [--batches 64 512 2048] [--steps 2] [--mini-batch 64]
                                   [--max-length 64] [--rss-limit-gb 12]

MiniLM (the packaged all-MiniLM-L6-v2; --base/--kind for another model) on synthetic
(instructed query, positive, hard negative) triplets, through
`speed.train.embedding.embedding_trainer` (NO_DUPLICATES sampler, tau 0.02), so the numbers are
those of the real training path. Each (loss, batch) runs in its own
subprocess, so peak RSS (ru_maxrss) is that configuration's own; on a GPU the peak allocated GPU
memory is reported too. One untimed warm-up step, then `--steps` timed steps: examples/s =
triplets per timed second. The plain loss holds the activations of the whole batch; it is
skipped at a batch whose RSS, extrapolated linearly from the two smaller plain runs, would pass
--rss-limit-gb.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    *("river", "stone", "market", "cloud", "engine", "garden", "signal", "paper", "window"),
    *("harbor", "forest", "metal", "song", "bridge", "winter", "cotton", "planet", "ladder"),
    *("mirror", "valley", "copper", "rocket", "violet", "canyon", "lantern"),
]


def triplets(n: int, seed: int) -> dict[str, list[str]]:
    """Unique texts (the NO_DUPLICATES sampler needs them): ~25-token queries, ~45-token docs."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = {"anchor": [], "positive": [], "negative": []}
    for i in range(n):
        rows["anchor"].append(
            f"Instruct: Retrieve passages about {words(3)}\nQuery: {i} {words(8)}"
        )
        rows["positive"].append(f"{i} {words(30)}")
        rows["negative"].append(f"{i + n} {words(30)}")
    return rows


def worker(loss_name: str, batch: int, args: argparse.Namespace) -> dict:
    import resource

    import torch
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback
    from transformers.trainer_utils import SaveStrategy

    from speed.train.embedding import build_model, embedding_trainer, make_loss

    temperature, steps = 0.02, args.steps
    model = build_model(args.base, args.kind, args.max_length, dtype=args.dtype)
    if loss_name == "cached":
        loss = make_loss(model, temperature, args.mini_batch)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=1 / temperature)
    data = {"triplets": Dataset.from_dict(triplets(batch * (steps + 1), seed=batch))}

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        trainer = embedding_trainer(
            model,
            data,
            tmp,
            temperature=temperature,
            batch_size=batch,
            mini_batch_size=args.mini_batch,
            learning_rate=1e-5,
            warmup_steps=0,
            weight_decay=0.0,
            epochs=1,
            max_steps=steps + 1,
            seed=0,
            loss=loss,
            bf16=args.bf16,
        )
        trainer.args.save_strategy = SaveStrategy.NO  # a benchmark keeps no checkpoints
        clock = Clock()
        trainer.add_callback(clock)
        trainer.train()
    timed = clock.ends[-1] - clock.ends[0]
    return {
        "loss": loss_name,
        "batch": batch,
        "timed_steps": len(clock.ends) - 1,
        "s_per_step": timed / (len(clock.ends) - 1),
        "examples_per_s": batch * (len(clock.ends) - 1) / timed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def run(loss: str, batch: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", loss, "--batches", str(batch)]
    cmd += ["--steps", str(args.steps), "--mini-batch", str(args.mini_batch)]
    cmd += ["--max-length", str(args.max_length), "--base", args.base, "--kind", args.kind]
    cmd += ["--dtype", args.dtype] + (["--bf16"] if args.bf16 else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"loss": loss, "batch": batch, "error": proc.stderr.strip().splitlines()[-1:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def extrapolated_rss(results: list[dict], batch: int) -> float | None:
    done = sorted((r["batch"], r["peak_rss_gb"]) for r in results if "peak_rss_gb" in r)
    if len(done) < 2:
        return None
    (b0, m0), (b1, m1) = done[-2:]
    return m1 + (m1 - m0) / (b1 - b0) * (batch - b1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--mini-batch", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rss-limit-gb", type=float, default=12.0)
    parser.add_argument("--losses", nargs="+", default=["cached", "plain"])
    parser.add_argument("--base", default="minilm", help="'minilm' or a model folder")
    parser.add_argument("--kind", choices=["encoder", "decoder"], default="encoder")
    parser.add_argument("--dtype", default="float32", help="weights as loaded (decoder kind)")
    parser.add_argument("--bf16", action="store_true", help="mixed precision (GPU)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--worker", choices=["cached", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.batches[0], args)
        print(json.dumps(result))
        return

    rows: list[dict] = []
    for loss in args.losses:
        done: list[dict] = []
        for batch in sorted(args.batches):
            guess = extrapolated_rss(done, batch) if loss == "plain" else None
            if guess is not None and guess > args.rss_limit_gb:
                rows.append({"loss": loss, "batch": batch, "skipped": f"~{guess:.1f} GB RSS"})
                continue
            result = run(loss, batch, args)
            done.append(result)
            rows.append(result)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")

    name = "MiniLM-L6" if args.base == "minilm" else f"{args.kind} {args.base}"
    print(f"\n{name}, max_length {args.max_length}, mini-batch {args.mini_batch} (cached)")
    print(f"{'loss':<7} {'batch':>6} {'ex/s':>8} {'s/step':>8} {'RSS GB':>7} {'GPU GB':>7}  device")
    for r in rows:
        if "examples_per_s" not in r:
            print(f"{r['loss']:<7} {r['batch']:>6}  {r.get('skipped') or r.get('error')}")
            continue
        gpu = f"{r['peak_gpu_gb']:.2f}" if r["peak_gpu_gb"] is not None else "-"
        print(
            f"{r['loss']:<7} {r['batch']:>6} {r['examples_per_s']:>8.1f} {r['s_per_step']:>8.2f} "
            f"{r['peak_rss_gb']:>7.2f} {gpu:>7}  {r['device']}"
        )


if __name__ == "__main__":
    main()
