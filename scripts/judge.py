from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.align import run_judge

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
run_judge(
    llm=sm.params.llm,
    candidates_path=sm.input.candidates,
    temperature=sm.params.temperature,
    max_tokens=sm.params.max_tokens,
    max_reason_chars=sm.params.max_reason_chars,
    price=sm.params.price,
    cache_dir=sm.params.cache_dir,
    judgments_output=sm.output.judgments,
    pairs_output=sm.output.pairs,
    stats_output=sm.output.stats,
    ledger=sm.output.ledger,
)
