from speed.logs import setup_logging
from speed.report.scaling import write_scaling_subset

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
write_scaling_subset(sm.input[0], float(sm.wildcards.fraction), sm.params.seed, sm.output[0])
