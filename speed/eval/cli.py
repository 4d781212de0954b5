"""`speed-eval`: score one embedding model on local/mteb tasks and write a CSV."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from speed.io import atomic_file


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="speed-eval", description=__doc__)
    ap.add_argument("--model", required=True, help="model folder, or `minilm` (all-MiniLM-L6-v2)")
    ap.add_argument(
        "--task",
        action="append",
        required=True,
        help="local:<dir> or mteb:<TaskName>; repeat for more tasks",
    )
    ap.add_argument("--output", required=True, type=Path, help="CSV to write")
    ap.add_argument("--cache-dir", type=Path, help="keep mteb's results here (default: temporary)")
    ap.add_argument("--model-name", help="name for mteb's results (default: from the folder)")
    ap.add_argument("--revision", help="revision for mteb's results (default: content hash)")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="add per-task query instructions even if the model was saved without prompts",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mteb", "sentence_transformers", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from speed.eval.run import evaluate_model  # heavy imports after argument errors

    try:
        df = evaluate_model(
            args.model,
            args.task,
            output_dir=args.cache_dir,
            model_name=args.model_name,
            revision=args.revision,
            use_instructions=args.instructions,
            batch_size=args.batch_size,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # bad spec, missing data
        ap.exit(2, f"speed-eval: error: {e}\n")
    with atomic_file(args.output) as f:
        df.write_csv(f)
    print(df.write_csv(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
