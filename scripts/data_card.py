from speed.io import atomic_file, read_json
from speed.logs import setup_logging
from speed.report.data_card import data_card

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
stats = {v: read_json(p) for v, p in zip(sm.params.variants, sm.input.corpus_stats, strict=True)}
card = data_card(sm.params.facts, stats, read_json(sm.input.cost), sm.input.summary)
with atomic_file(sm.output[0]) as f:
    f.write(card)
