# Tiny offline LLMs, built as targets so the default run needs no hub.

TINY_MODELS = wf.tiny_model_names(config)


rule tiny_tokenizer:
    output:
        directory(f"{RUN}/models/tiny/tokenizer"),
    params:
        vocab_size=config["tiny_tokenizer"]["vocab_size"] if "tiny_tokenizer" in config else 1024,
    log:
        log_of("tiny_tokenizer"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/llm.yaml"
    script:
        "../scripts/build_tiny_tokenizer.py"


rule tiny_llm:
    input:
        tokenizer=rules.tiny_tokenizer.output[0],
    output:
        directory(f"{RUN}/models/tiny/{{name}}"),
    wildcard_constraints:
        name="|".join(TINY_MODELS) or "^$",
    params:
        spec=lambda wc: config["models"][wc.name]["tiny"],
    log:
        log_of("tiny_llm_{name}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/llm.yaml"
    script:
        "../scripts/build_tiny_llm.py"
