import json

from speed.io import atomic_file, read_json_each
from speed.logs import setup_logging
from speed.report.cost import cost_report

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
stats = read_json_each(sm.params.variants, sm.input.corpus_stats)
report = cost_report(sm.params.ledgers, stats, sm.params.price, sm.params.planned)
with atomic_file(sm.output[0]) as f:
    json.dump(report, f, indent=2)
    f.write("\n")
log.info("teacher cost: %s", json.dumps(report["total"]))
