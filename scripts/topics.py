from speed.logs import setup_logging
from speed.stages.prompts import run_topics

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
run_topics(**sm.params.topics, seed=sm.params.seed, output=sm.output[0])
