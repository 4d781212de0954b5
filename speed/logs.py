"""Route a job's output into its rule's `log:` file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_logging(log_path: str | Path) -> logging.Logger:
    """Point stderr (file descriptor 2) at the log, so that Python logging, warnings, tracebacks
    and what native libraries such as vLLM print all end up in the one file Snakemake shows."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # Progress bars (generation, training, evaluation) redraw at most every 30 s: a long job's
    # log shows its progress without filling up with redraws.
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    os.dup2(log_fd, 2)
    os.close(log_fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    return logging.getLogger("speed")
