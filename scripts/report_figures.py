from speed.io import read_json, read_json_each
from speed.logs import setup_logging
from speed.report import plots

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
stats = read_json_each(sm.params.variants, sm.input.corpus_stats)
plots.cost_per_stage(read_json(sm.input.cost), sm.output.cost)
plots.examples_per_family(stats, sm.output.families)
plots.scores(sm.input.summary, sm.output.scores)
