"""SPEED: aligned small LLMs synthesize embedding training data (arXiv 2410.18634)."""

import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")

from speed import workflow as wf  # noqa: E402

RUN = wf.run_dir(config)


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/teacher.smk"
include: "rules/align.smk"
include: "rules/synthesize.smk"
include: "rules/embed.smk"


rule all:
    input:
        expand(f"{RUN}/corpus/{{variant}}.parquet", variant=config["corpus"]["variants"]),
        f"{RUN}/eval/summary.csv",


onstart:
    # Fail before any job runs, never half-way through paid teacher calls.
    if config["teacher"]["backend"] == "openai":
        var = config["teacher"]["openai"]["api_key_env"]
        if not os.environ.get(var):
            raise WorkflowError(
                f"teacher.backend is openai but the environment variable {var} "
                "(teacher.openai.api_key_env) is not set: export the API key there"
            )
