from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.align import seed_sft_examples
from speed.train.distributed import job_processes, run_ranks
from speed.train.sft import train_sft

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
gpus = claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_ranks(
    job_processes("junior", len(gpus)),  # data-parallel ranks, one per GPU
    train_sft,
    sm.params.base,
    seed_sft_examples(sm.input.seed, sm.input.prompts),
    sm.output[0],
    sm.params.checkpoints,
    spec={**sm.params.train, "seed": sm.params.seed},
    log=log,
    card=sm.params.card,
    chat_template=sm.input.get("chat_template") or None,  # generation.chat_template, if set
)
