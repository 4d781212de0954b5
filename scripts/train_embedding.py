from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.train.distributed import job_processes, run_ranks
from speed.train.embedding import train_embedding

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
gpus = claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_ranks(
    job_processes("embedding", len(gpus)),  # data-parallel ranks, one per GPU
    train_embedding,
    sm.input[0],
    sm.params.base,
    sm.output[0],
    sm.params.checkpoints,
    **sm.params.train,
    seed=sm.params.seed,
    log=log,
    card=sm.params.card,
)
