from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.align import run_revise

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_revise(
    llm=sm.params.llm,
    candidates_path=sm.input.candidates,
    sampling=sm.params.sampling,
    max_field_chars=sm.params.max_field_chars,
    max_reason_chars=sm.params.max_reason_chars,
    seed=sm.params.seed,
    price=sm.params.price,
    cache_dir=sm.params.cache_dir,
    output=sm.output.revisions,
    rejects_output=sm.output.rejects,
    stats_output=sm.output.stats,
    ledger=sm.output.ledger,
)
