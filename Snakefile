"""SPEED: aligned small LLMs synthesize embedding training data (arXiv 2410.18634)."""

import os
import re

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")

from speed import workflow as wf  # noqa: E402
from speed.llm import knobs  # noqa: E402
from speed.llm.budget import ENV_VAR, budget_env  # noqa: E402

RUN = wf.run_dir(config)
SCALING_VARIANT = config["scaling"]["variant"]
if config["scaling"]["fractions"] and SCALING_VARIANT not in config["corpus"]["variants"]:
    raise WorkflowError(
        f"scaling.variant {SCALING_VARIANT} is not among corpus.variants "
        f"{config['corpus']['variants']}: the scaling study trains on that variant's corpus"
    )
# The teacher budget guards paid calls without being a rule param: raising it reruns nothing.
os.environ[ENV_VAR] = budget_env(RUN, config["teacher"]["budget"])
# So do the backend settings that change no output (speed/llm/knobs.py): batch sizes, KV cache,
# eager mode, tensor parallelism, the OpenAI transport and the Batch API's polling.
os.environ[knobs.ENV_VAR] = knobs.knobs_env(wf.knobs(config))

report: "docs/report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/teacher.smk"
include: "rules/align.smk"
include: "rules/synthesize.smk"
include: "rules/embed.smk"
include: "rules/report.smk"


rule all:
    input:
        expand(f"{RUN}/corpus/{{variant}}.parquet", variant=config["corpus"]["variants"]),
        f"{RUN}/eval/summary.csv",
        f"{RUN}/report/cost.json",
        f"{RUN}/report/data_card.md",
        rules.report_figures.output,
        rules.scaling.output if SCALING_POINTS else [],


onstart:
    # Fail before any job runs, never half-way through paid teacher calls.
    from speed.plan import check_budget, make_plan

    over = check_budget(make_plan(config), config["teacher"]["budget"])
    if over:
        raise WorkflowError(
            "the plan exceeds teacher.budget (see `speed-plan <configfile>`): " + "; ".join(over)
        )
    if config["teacher"]["backend"] == "openai":
        var = config["teacher"]["openai"]["api_key_env"]
        if not os.environ.get(var):
            raise WorkflowError(
                f"teacher.backend is openai but the environment variable {var} "
                "(teacher.openai.api_key_env) is not set: export the API key there"
            )
