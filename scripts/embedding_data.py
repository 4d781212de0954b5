import polars as pl

from speed.eval.heldout import heldout_mask
from speed.io import atomic_file
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
frame = pl.read_parquet(sm.input[0])
train = frame.filter(~heldout_mask(frame, sm.params.fraction, sm.params.seed))
with atomic_file(sm.output[0], "wb") as f:
    train.write_parquet(f)
log.info(
    "%d of %d records for training (%d held out)",
    train.height,
    frame.height,
    frame.height - train.height,
)
