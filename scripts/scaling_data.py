import polars as pl

from speed.io import atomic_file
from speed.logs import setup_logging
from speed.report.scaling import nested_sample

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
frame = pl.read_parquet(sm.input[0])
subset = nested_sample(frame, float(sm.wildcards.fraction), sm.params.seed)
with atomic_file(sm.output[0], "wb") as f:
    subset.write_parquet(f)
log.info("%d of %d training records", subset.height, frame.height)
