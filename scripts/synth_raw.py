from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.synthesize import run_generate

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_generate(
    llm=sm.params.llm,
    generator=sm.wildcards.generator,
    prompts_path=sm.input.prompts,
    shard=int(sm.wildcards.shard),
    shards=sm.params.shards,
    sampling=sm.params.sampling,
    seed=sm.params.seed,
    cache_dir=sm.params.cache_dir,
    output=sm.output[0],
)
