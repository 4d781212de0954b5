import json

from speed.gpu import claim_gpus
from speed.logs import setup_logging
from speed.stages.smoke import run_smoke

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
claim_gpus(sm.resources.get("gpu", 0))  # pin GPUs before torch/vLLM load
stats = run_smoke(
    llm=sm.params.llm,
    n=sm.params.n,
    max_tokens=sm.params.max_tokens,
    temperature=sm.params.temperature,
    top_p=sm.params.top_p,
    seed=sm.params.seed,
    price=sm.params.price,
    cache_dir=sm.params.cache_dir,
    output=sm.output.samples,
    ledger=sm.output.ledger,
)
log.info("smoke stats: %s", json.dumps(stats))
