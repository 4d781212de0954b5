from speed.eval.summary import summarize, write_csv
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
summary = summarize(dict(zip(sm.params.variants, sm.input, strict=True)))
write_csv(summary, sm.output[0])
log.info("summary:\n%s", summary)
