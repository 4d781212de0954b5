from speed.logs import setup_logging
from speed.stages.synthesize import run_corpus

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
run_corpus(
    inputs=list(sm.input.shards),
    variant=sm.wildcards.variant,
    limits=sm.params.limits,
    dedup=sm.params.dedup,
    decontamination=sm.params.decontamination,
    eval_tasks=sm.params.eval_tasks,
    output=sm.output.parquet,
    stats_output=sm.output.stats,
)
