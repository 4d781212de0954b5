# Teacher stages (SPEED 1-4): topics -> brainstormed tasks -> data prompts -> seed examples.
# Every model call goes through the cached, ledgered LLM layer; each teacher job takes one unit
# of the global `teacher_api` resource, which caps concurrent API jobs.

from speed.prompts.families import BRAINSTORMED

PURPOSES = list(config["prompts"]["n"])


rule topics:
    input:
        # a topic file is an input (its content is a rerun trigger); the built-in tree is not
        [] if config["topics"]["source"] == "builtin" else config["topics"]["path"],
    output:
        f"{RUN}/topics.jsonl",
    params:
        topics=config["topics"],
        seed=config["seed"],
    log:
        log_of("topics"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/topics.py"


rule brainstorm:
    input:
        topics=rules.topics.output[0],
        model=wf.teacher_inputs(config),
    output:
        tasks=f"{RUN}/tasks/{{family}}.jsonl",
        stats=f"{RUN}/tasks/{{family}}.stats.json",
        ledger=f"{RUN}/ledger/brainstorm_{{family}}.jsonl",
    wildcard_constraints:
        family="|".join(BRAINSTORMED),
    params:
        **teacher_params(config["brainstorm"]["max_tokens"]),
        brainstorm={k: v for k, v in config["brainstorm"].items() if k != "max_tokens"},
    log:
        log_of("brainstorm_{family}"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/brainstorm.py"


rule prompts:
    input:
        topics=rules.topics.output[0],
        tasks=expand(f"{RUN}/tasks/{{family}}.jsonl", family=BRAINSTORMED),
    output:
        f"{RUN}/prompts/{{purpose}}.jsonl",
    wildcard_constraints:
        purpose="|".join(PURPOSES),
    params:
        families=BRAINSTORMED,
        n=lambda wc: config["prompts"]["n"][wc.purpose],
        mix=config["prompts"]["mix"],
        max_field_chars=config["prompts"]["max_field_chars"],
        seed=config["seed"],
    log:
        log_of("prompts_{purpose}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/prompts.py"


rule seed:
    input:
        prompts=f"{RUN}/prompts/seed.jsonl",
        model=wf.teacher_inputs(config),
    output:
        records=f"{RUN}/teacher/seed.jsonl",
        rejects=f"{RUN}/teacher/seed.rejects.jsonl",
        stats=f"{RUN}/teacher/seed.stats.json",
        ledger=f"{RUN}/ledger/seed.jsonl",
    params:
        **teacher_params(config["seed_data"]["max_tokens"]),
    log:
        log_of("seed"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/seed.py"


rule smoke_teacher:
    input:
        wf.teacher_inputs(config),
    output:
        samples=f"{RUN}/smoke/teacher.jsonl",
        ledger=f"{RUN}/ledger/smoke.jsonl",
    params:
        llm=wf.teacher_spec(config),
        n=config["smoke"]["requests"],
        max_tokens=config["smoke"]["max_tokens"],
        temperature=config["teacher"]["temperature"],
        top_p=config["teacher"]["top_p"],
        seed=config["seed"],
        price=wf.teacher_price(config),
        cache_dir=config["cache_dir"],
    log:
        log_of("smoke_teacher"),
    threads: res("llm", "threads")
    resources:
        mem_mb=res("llm", "mem_mb"),
        runtime=res("llm", "runtime"),
        gpu=res("llm", "gpu"),
        teacher_api=1,
    conda:
        llm_env("llm")
    script:
        "../scripts/smoke_teacher.py"
