from speed.eval.results import by_variant
from speed.eval.summary import summarize, write_csv
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
files = by_variant(sm.input)
summary = summarize({v: files[v] for v in sm.params.variants})
write_csv(summary, sm.output[0])
log.info("summary:\n%s", summary)
