from speed.eval.heldout import write_training_split
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
write_training_split(sm.input[0], sm.params.fraction, sm.params.seed, sm.output[0])
