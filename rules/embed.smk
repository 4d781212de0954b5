# Embedding model (SPEED 12) and evaluation (SPEED 13): the corpus minus the held-out prompts
# trains an embedding model per variant; `base` is the untrained embedding base, so every run
# shows what training changed.

EMBED = config["embedding"]
EVAL_VARIANTS = ["base", *config["corpus"]["variants"]]
HELDOUT_FROM = config["corpus"]["variants"][0]
# The scaling study trains on nested fractions of one variant's data: "speed@0.5" etc.
SCALING = config["scaling"]
SCALED = [f"{SCALING['variant']}@{f}" for f in sorted(SCALING["fractions"])]
SCALING_POINTS = [*SCALED, SCALING["variant"]] if SCALED else []
# One evaluation job per (variant, task): key -> spec (speed.workflow.eval_tasks).
EVAL_TASKS = wf.eval_tasks(config)
wf.check_eval_resources(config)


rule heldout_tasks:
    input:
        corpus=f"{RUN}/corpus/{HELDOUT_FROM}.parquet",
        prompts=f"{RUN}/prompts/synthesis.jsonl",  # the STS scores each prompt asked for
    output:
        directory(f"{RUN}/eval/heldout"),
    params:
        fraction=config["evaluation"]["heldout_fraction"],
        seed=config["seed"],
    log:
        log_of("heldout_tasks"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/heldout_tasks.py"


rule embedding_data:
    input:
        f"{RUN}/corpus/{{variant}}.parquet",
    output:
        f"{RUN}/embedding_data/{{variant}}.parquet",
    wildcard_constraints:
        variant="|".join(VARIANT_NAMES),
    params:
        # nothing is held out when no heldout: task is evaluated (the paper config)
        fraction=config["evaluation"]["heldout_fraction"] if wf.uses_heldout(config) else 0.0,
        seed=config["seed"],
    log:
        log_of("embedding_data_{variant}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/embedding_data.py"


rule embedding:
    input:
        f"{RUN}/embedding_data/{{variant}}.parquet",
    output:
        directory(f"{RUN}/embedding/{{variant}}"),
    params:
        base=EMBED["base"],
        train=wf.train_params(config, "embedding"),
        seed=config["seed"],
        checkpoints=f"{config['cache_dir']}/checkpoints",
        card=lambda wc: wf.card_params(config, name=wc.variant),
    log:
        log_of("embedding_{variant}"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        "../envs/embed.yaml"
    script:
        "../scripts/train_embedding.py"


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        # mteb's own result file with the model's identity (speed.eval.results, docs/schemas.md)
        f"{RUN}/eval/{{variant}}/{{task}}.json",
    wildcard_constraints:
        variant="|".join(re.escape(v) for v in ["base", *VARIANT_NAMES, *SCALED]),
        task="|".join(re.escape(k) for k in EVAL_TASKS),
    params:
        task=lambda wc: EVAL_TASKS[wc.task],
        base=EMBED["base"],
        # how the untrained base of a decoder is read (speed.stages.evaluate)
        kind=EMBED["kind"],
        max_length=EMBED["max_length"],
        # mteb's result cache, one folder per (model, task, data revision): a rerun resumes
        cache=f"{config['cache_dir']}/mteb",
    log:
        log_of("evaluate_{variant}_{task}"),
    threads: res("gpu", "threads")
    resources:
        **eval_resources(),
    conda:
        "../envs/embed.yaml"
    script:
        "../scripts/evaluate.py"


rule eval_summary:
    input:
        expand(f"{RUN}/eval/{{variant}}/{{task}}.json", variant=EVAL_VARIANTS, task=EVAL_TASKS),
    output:
        f"{RUN}/eval/summary.csv",
    params:
        variants=EVAL_VARIANTS,
    log:
        log_of("eval_summary"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/eval_summary.py"


rule ablations:
    """Every corpus variant trained and evaluated, whatever corpus.variants lists (the paper's
    ablation table): `snakemake results/<run>/eval/ablations.csv`."""
    input:
        expand(
            f"{RUN}/eval/{{variant}}/{{task}}.json",
            variant=["base", *VARIANT_NAMES],
            task=EVAL_TASKS,
        ),
    output:
        f"{RUN}/eval/ablations.csv",
    params:
        variants=["base", *VARIANT_NAMES],
    log:
        log_of("ablations"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/eval_summary.py"
