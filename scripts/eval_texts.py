from speed.eval.texts import write_task_texts
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
n = write_task_texts(sm.params.spec, sm.output[0])
log.info("%s: %d evaluation texts", sm.params.spec, n)
