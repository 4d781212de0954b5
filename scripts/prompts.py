from speed.logs import setup_logging
from speed.stages.prompts import run_prompts

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
run_prompts(
    purpose=sm.wildcards.purpose,
    n=sm.params.n,
    mix=sm.params.mix,
    tasks=dict(zip(sm.params.families, sm.input.tasks, strict=True)),
    topics_path=sm.input.topics,
    seed=sm.params.seed,
    max_field_chars=sm.params.max_field_chars,
    output=sm.output[0],
)
