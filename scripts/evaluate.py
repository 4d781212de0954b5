from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.evaluate import evaluate_variant

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
scores = evaluate_variant(
    sm.wildcards.variant,
    sm.params.task,
    sm.input.get("model"),
    sm.params.base,
    sm.output[0],
    sm.params.cache,
    kind=sm.params.kind,
    max_length=sm.params.max_length,
)
log.info("scores:\n%s", scores)
