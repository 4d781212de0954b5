from speed.gpu import claim_gpus
from speed.io import read_jsonl
from speed.logs import setup_logging
from speed.train.distributed import job_processes, run_ranks
from speed.train.dpo import train_dpo

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
gpus = claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
train = dict(sm.params.train)
beta = train.pop("beta")
run_ranks(
    job_processes("senior", len(gpus)),  # data-parallel ranks, one per GPU
    train_dpo,
    sm.input.junior,
    read_jsonl(sm.input.pairs),
    sm.output[0],
    sm.params.checkpoints,
    beta=beta,
    spec={**train, "seed": sm.params.seed},
    log=log,
    card=sm.params.card,
)
