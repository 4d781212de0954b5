from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.align import run_candidates

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_candidates(
    llm=sm.params.llm,
    prompts_path=sm.input.prompts,
    k=sm.params.k,
    sampling=sm.params.sampling,
    seed=sm.params.seed,
    cache_dir=sm.params.cache_dir,
    output=sm.output.candidates,
    stats_output=sm.output.stats,
)
