# Synthesis (SPEED 11): a generator writes the corpus prompts shard by shard, the revisor
# revises each example once, and each variant's corpus is assembled, deduplicated and
# decontaminated. Variants share every upstream artifact and the call cache.

GENERATORS = {"senior": f"{RUN}/models/senior", "junior": f"{RUN}/models/junior"}
SHARDS = list(range(config["synthesis"]["shards"]))
VARIANTS = wf.VARIANT_SOURCES  # variant -> (generator, revised?)
VARIANT_NAMES = [*VARIANTS, "teacher_only"]


rule synth_raw:
    input:
        model=lambda wc: GENERATORS[wc.generator],
        prompts=f"{RUN}/prompts/synthesis.jsonl",
    output:
        f"{RUN}/synth/raw/{{generator}}/{{shard}}.jsonl",
    wildcard_constraints:
        generator="senior|junior",
        shard=r"\d+",
    params:
        llm=lambda wc: wf.generator_spec(config, wc.generator, GENERATORS[wc.generator]),
        shards=config["synthesis"]["shards"],
        sampling=config["synthesis"]["sampling"],
        seed=config["seed"],
        cache_dir=config["cache_dir"],
    log:
        log_of("synth_raw_{generator}_{shard}"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/synth_raw.py"


rule synth_revised:
    input:
        raw=f"{RUN}/synth/raw/{{generator}}/{{shard}}.jsonl",
        revisor=f"{RUN}/models/revisor",
        prompts=f"{RUN}/prompts/synthesis.jsonl",
    output:
        revised=f"{RUN}/synth/revised/{{generator}}/{{shard}}.jsonl",
        stats=f"{RUN}/synth/revised/{{generator}}/{{shard}}.stats.json",
    wildcard_constraints:
        generator="senior|junior",
        shard=r"\d+",
    params:
        llm=wf.generator_spec(config, "revisor", f"{RUN}/models/revisor"),
        shards=config["synthesis"]["shards"],  # which rows of the prompts the raw shard holds
        sampling=config["synthesis"]["revision_sampling"],
        seed=config["seed"],
        cache_dir=config["cache_dir"],
    log:
        log_of("synth_revised_{generator}_{shard}"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/synth_revised.py"


rule teacher_only:
    input:
        prompts=f"{RUN}/prompts/teacher_only.jsonl",
        model=wf.teacher_inputs(config),
    output:
        examples=f"{RUN}/synth/teacher_only.jsonl",
        ledger=f"{RUN}/ledger/teacher_only.jsonl",
    params:
        llm=wf.teacher_spec(config),
        sampling=config["synthesis"]["sampling"],
        seed=config["seed"],
        price=wf.teacher_price(config),
        cache_dir=config["cache_dir"],
    log:
        log_of("teacher_only"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/teacher_only.py"


rule eval_texts:
    """The evaluation texts of an mteb: task the corpus must not contain (needs the HF hub or
    its local cache, as evaluation does)."""
    output:
        f"{RUN}/decontamination/{{task}}.jsonl",
    params:
        spec=lambda wc: f"mteb:{wc.task}",
    log:
        log_of("eval_texts_{task}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/embed.yaml"
    script:
        "../scripts/eval_texts.py"


rule corpus:
    input:
        shards=variant_inputs,
        eval_sets=wf.decontamination_tasks(config).values(),
    output:
        parquet=f"{RUN}/corpus/{{variant}}.parquet",
        stats=f"{RUN}/corpus/{{variant}}.stats.json",
    wildcard_constraints:
        variant="|".join(VARIANT_NAMES),
    params:
        limits={k: config["corpus"][k] for k in ("min_words", "max_words")},
        dedup=config["corpus"]["dedup"],
        decontamination=config["corpus"]["decontamination"],
        eval_tasks=wf.decontamination_tasks(config),
    log:
        log_of("corpus_{variant}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/corpus.py"
