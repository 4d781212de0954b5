# Alignment (SPEED 5-10): junior SFT -> candidates -> teacher judgments -> senior DPO;
# teacher revisions of junior candidates -> revisor SFT. Senior and revisor are independent.


rule junior:
    input:
        seed=f"{RUN}/teacher/seed.jsonl",
        prompts=f"{RUN}/prompts/seed.jsonl",
        base=wf.model_inputs(config, config["generation"]["base"]),
        chat_template=config["generation"]["chat_template"] or [],
    output:
        directory(f"{RUN}/models/junior"),
    params:
        base=model_param(config["generation"]["base"]),
        train=wf.train_params(config, "junior"),
        seed=config["seed"],
        checkpoints=f"{config['cache_dir']}/checkpoints",
        card=wf.card_params(config, config["generation"]["base"], "junior"),
    log:
        log_of("junior"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/train_junior.py"


rule candidates:
    input:
        model=rules.junior.output[0],
        prompts=f"{RUN}/prompts/candidates.jsonl",
    output:
        candidates=f"{RUN}/align/candidates.jsonl",
        stats=f"{RUN}/align/candidates.stats.json",
    params:
        llm=wf.generator_spec(config, "junior", f"{RUN}/models/junior"),
        k=config["candidates"]["k"],
        sampling={k: v for k, v in config["candidates"].items() if k != "k"},
        seed=config["seed"],
        cache_dir=config["cache_dir"],
    log:
        log_of("candidates"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/candidates.py"


rule judge:
    input:
        candidates=rules.candidates.output.candidates,
        model=wf.teacher_inputs(config),
    output:
        judgments=f"{RUN}/align/judgments.jsonl",
        pairs=f"{RUN}/align/preference_pairs.jsonl",
        stats=f"{RUN}/align/judgments.stats.json",
        ledger=f"{RUN}/ledger/judge.jsonl",
    params:
        llm=wf.teacher_spec(config),
        temperature=config["judge"]["temperature"],
        max_tokens=config["judge"]["max_tokens"],
        max_reason_chars=config["judge"]["max_reason_chars"],
        price=wf.teacher_price(config),
        cache_dir=config["cache_dir"],
    log:
        log_of("judge"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/judge.py"


rule revise:
    input:
        candidates=rules.candidates.output.candidates,
        model=wf.teacher_inputs(config),
    output:
        revisions=f"{RUN}/align/revisions.jsonl",
        rejects=f"{RUN}/align/revisions.rejects.jsonl",
        stats=f"{RUN}/align/revisions.stats.json",
        ledger=f"{RUN}/ledger/revise.jsonl",
    params:
        llm=wf.teacher_spec(config),
        sampling=dict(
            temperature=config["teacher"]["temperature"],
            top_p=config["teacher"]["top_p"],
            max_tokens=config["revise"]["max_tokens"],
        ),
        max_field_chars=config["prompts"]["max_field_chars"],
        max_reason_chars=config["revise"]["max_reason_chars"],
        seed=config["seed"],
        price=wf.teacher_price(config),
        cache_dir=config["cache_dir"],
    log:
        log_of("revise"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/revise.py"


rule senior:
    input:
        junior=rules.junior.output[0],
        pairs=rules.judge.output.pairs,
    output:
        directory(f"{RUN}/models/senior"),
    params:
        train=wf.train_params(config, "senior"),
        seed=config["seed"],
        checkpoints=f"{config['cache_dir']}/checkpoints",
        card=wf.card_params(config, config["generation"]["base"], "senior"),
    log:
        log_of("senior"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/train_senior.py"


rule revisor:
    input:
        revisions=rules.revise.output.revisions,
        base=wf.model_inputs(config, config["generation"]["base"]),
        chat_template=config["generation"]["chat_template"] or [],
    output:
        directory(f"{RUN}/models/revisor"),
    params:
        base=model_param(config["generation"]["base"]),
        train=wf.train_params(config, "revisor"),
        seed=config["seed"],
        checkpoints=f"{config['cache_dir']}/checkpoints",
        card=wf.card_params(config, config["generation"]["base"], "revisor"),
    log:
        log_of("revisor"),
    threads: res("gpu", "threads")
    resources:
        **gpu_resources(),
    conda:
        llm_env("gpu")
    script:
        "../scripts/train_revisor.py"
