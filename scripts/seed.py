from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.teacher import run_seed

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_seed(
    llm=sm.params.llm,
    prompts_path=sm.input.prompts,
    sampling=sm.params.sampling,
    seed=sm.params.seed,
    price=sm.params.price,
    cache_dir=sm.params.cache_dir,
    output=sm.output.records,
    rejects_output=sm.output.rejects,
    stats_output=sm.output.stats,
    ledger=sm.output.ledger,
)
