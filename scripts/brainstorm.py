from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.teacher import run_brainstorm

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_brainstorm(
    llm=sm.params.llm,
    family=sm.wildcards.family,
    topics_path=sm.input.topics,
    **sm.params.brainstorm,
    sampling=sm.params.sampling,
    seed=sm.params.seed,
    price=sm.params.price,
    cache_dir=sm.params.cache_dir,
    output=sm.output.tasks,
    stats_output=sm.output.stats,
    ledger=sm.output.ledger,
)
