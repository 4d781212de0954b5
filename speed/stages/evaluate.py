"""Stage 13 (Evaluate): one variant of the run's embedding model on the configured tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from speed.eval.run import evaluate_model
from speed.eval.summary import write_csv


def evaluate_variant(
    variant: str,
    tasks: Sequence[str],
    model: str | None,
    base: str,
    scores_csv: str | Path,
    results_dir: str | Path,
    kind: str = "encoder",
    max_length: int = 512,
) -> pl.DataFrame:
    """The workflow's evaluation of one variant (rule evaluate): its trained `model` folder, or
    for `base` the untrained embedding base; scores to `scores_csv`, mteb's files to
    `results_dir`. Trained models were trained with instructed queries, so they get them. The
    base is scored as published: an encoder as saved; a bare decoder (`kind: decoder`, no
    published protocol) as training starts from it, last-token pooled with EOS appended and EOS
    as its pad token (speed.train.embedding.decoder_encoder), at `max_length`."""
    trained = variant != "base"
    if trained and model is None:
        raise ValueError(f"variant {variant}: no trained model folder to evaluate")
    encoder = None
    if not trained and kind == "decoder":
        from speed.train.embedding import decoder_encoder

        encoder = decoder_encoder(base, max_length)
    scores = evaluate_model(
        model if trained else base,  # type: ignore[arg-type]
        list(tasks),
        model_name=f"speed/{variant}",
        use_instructions=trained,
        results_dir=results_dir,
        st_model=encoder,
    )
    write_csv(scores, str(scores_csv))
    return scores
