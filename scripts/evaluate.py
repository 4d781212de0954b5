from speed.eval.run import evaluate_model
from speed.eval.summary import write_csv
from speed.gpu import claim_gpus
from speed.logs import setup_logging

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
trained = sm.wildcards.variant != "base"
scores = evaluate_model(
    sm.input.model if trained else sm.params.base,
    list(sm.params.tasks),
    model_name=f"speed/{sm.wildcards.variant}",
    use_instructions=trained,  # trained with instructed queries; the base as published
)
write_csv(scores, sm.output[0])
log.info("scores:\n%s", scores)
