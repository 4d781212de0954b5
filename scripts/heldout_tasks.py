from speed.eval.heldout import write_heldout_tasks
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
counts = write_heldout_tasks(
    sm.input.corpus, sm.input.prompts, sm.params.fraction, sm.params.seed, sm.output[0]
)
log.info("held-out tasks: %s", counts)
