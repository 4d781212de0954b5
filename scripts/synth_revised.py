from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.synthesize import run_revise_shard

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_revise_shard(
    llm=sm.params.llm,
    raw_path=sm.input.raw,
    prompts_path=sm.input.prompts,
    sampling=sm.params.sampling,
    seed=sm.params.seed,
    cache_dir=sm.params.cache_dir,
    output=sm.output.revised,
    stats_output=sm.output.stats,
    shard=int(sm.wildcards.shard),
    shards=sm.params.shards,
)
