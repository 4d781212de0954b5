"""Stage 13 (Evaluate): one variant of the run's embedding model on one configured task."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from speed.eval.run import evaluate_model


def evaluate_variant(
    variant: str,
    task: str,
    model: str | None,
    base: str,
    result_file: str | Path,
    cache_dir: str | Path,
    kind: str = "encoder",
    max_length: int = 512,
) -> pl.DataFrame:
    """The workflow's evaluation of one variant on one task spec (rule evaluate): its trained
    `model` folder, or for `base` the untrained embedding base; the per-task file (mteb's
    result with the model's identity, speed.eval.results) to `result_file`, mteb's cache under
    `cache_dir`. Trained models were trained with instructed queries, so they get them. The
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
    return evaluate_model(
        model if trained else base,  # type: ignore[arg-type]
        [task],
        output_dir=cache_dir,
        model_name=f"speed/{variant}",
        use_instructions=trained,
        result_files=[result_file],
        st_model=encoder,
    )
