import json

from speed.io import atomic_file
from speed.logs import setup_logging
from speed.report import plots
from speed.report.scaling import scaling_study, study_points

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
study = scaling_study(study_points(sm.params.points, sm.input.data, sm.input.scores))
with atomic_file(sm.output.fit) as f:
    json.dump(study, f, indent=2)
    f.write("\n")
plots.scaling(study, sm.output.figure)
log.info("scaling fits: %s", json.dumps(study["fits"]))
