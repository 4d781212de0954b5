from speed.io import atomic_file, read_json, read_json_each
from speed.logs import setup_logging
from speed.report.data_card import data_card

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
stats = read_json_each(sm.params.variants, sm.input.corpus_stats)
card = data_card(sm.params.facts, stats, read_json(sm.input.cost), sm.input.summary)
with atomic_file(sm.output[0]) as f:
    f.write(card)
