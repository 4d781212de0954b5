from speed.io import atomic_dir
from speed.logs import setup_logging
from speed.models.tiny import build_tokenizer

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
with atomic_dir(sm.output[0]) as tmp:
    build_tokenizer(tmp, vocab_size=sm.params.vocab_size)
