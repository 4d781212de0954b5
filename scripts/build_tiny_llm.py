from speed.io import atomic_dir
from speed.logs import setup_logging
from speed.models.tiny import build_llama

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
with atomic_dir(sm.output[0]) as tmp:
    build_llama(tmp, sm.input.tokenizer, **sm.params.spec)
