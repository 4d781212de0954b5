import json

import polars as pl

from speed.io import atomic_file
from speed.logs import setup_logging
from speed.report import plots
from speed.report.scaling import scaling_study

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
points = [
    {
        "label": label,
        "fraction": float(label.partition("@")[2] or 1.0),
        "examples": pl.scan_parquet(data).select(pl.len()).collect().item(),
        "scores_csv": scores,
    }
    for label, data, scores in zip(sm.params.points, sm.input.data, sm.input.scores, strict=True)
]
study = scaling_study(points)
with atomic_file(sm.output.fit) as f:
    json.dump(study, f, indent=2)
    f.write("\n")
plots.scaling(study, sm.output.figure)
log.info("scaling fits: %s", json.dumps(study["fits"]))
