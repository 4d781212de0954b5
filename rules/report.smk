# Reports (all on CPU, from finished artifacts): the teacher's cost from the ledgers, the data
# card, the figures, and the scaling study. Figures and the card go into `snakemake --report`.

from speed.plan import planned_teacher_stages
from speed.report.data_card import data_card_facts

LEDGERS = {
    "brainstorm": [f"{RUN}/ledger/brainstorm_{f}.jsonl" for f in BRAINSTORMED],
    "seed": [f"{RUN}/ledger/seed.jsonl"],
    "judge": [f"{RUN}/ledger/judge.jsonl"],
    "revise": [f"{RUN}/ledger/revise.jsonl"],
}
if "teacher_only" in config["corpus"]["variants"]:
    LEDGERS["teacher_only"] = [f"{RUN}/ledger/teacher_only.jsonl"]
CORPUS_STATS = expand(f"{RUN}/corpus/{{variant}}.stats.json", variant=config["corpus"]["variants"])


rule cost_report:
    input:
        ledgers=[p for paths in LEDGERS.values() for p in paths],
        corpus_stats=CORPUS_STATS,
    output:
        f"{RUN}/report/cost.json",
    params:
        ledgers=LEDGERS,
        variants=config["corpus"]["variants"],
        price=wf.teacher_price(config),
        planned=planned_teacher_stages(config),
    log:
        log_of("cost_report"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/cost_report.py"


rule report_figures:
    input:
        cost=rules.cost_report.output[0],
        corpus_stats=CORPUS_STATS,
        summary=rules.eval_summary.output[0],
    output:
        cost=report(
            f"{RUN}/report/cost_per_stage.png",
            category="Cost",
            caption="../docs/report/cost.rst",
        ),
        families=report(
            f"{RUN}/report/examples_per_family.png",
            category="Corpus",
            caption="../docs/report/families.rst",
        ),
        scores=report(
            f"{RUN}/report/scores.png",
            category="Evaluation",
            caption="../docs/report/scores.rst",
        ),
    params:
        variants=config["corpus"]["variants"],
    log:
        log_of("report_figures"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/report_figures.py"


rule data_card:
    input:
        cost=rules.cost_report.output[0],
        corpus_stats=CORPUS_STATS,
        summary=rules.eval_summary.output[0],
    output:
        report(
            f"{RUN}/report/data_card.md",
            category="Corpus",
            caption="../docs/report/data_card.rst",
        ),
    params:
        variants=config["corpus"]["variants"],
        facts=data_card_facts(config),
    log:
        log_of("data_card"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_card.py"


rule scaling_data:
    input:
        f"{RUN}/embedding_data/{{variant}}.parquet",
    output:
        f"{RUN}/embedding_data/{{variant}}@{{fraction}}.parquet",
    wildcard_constraints:
        variant="|".join(VARIANT_NAMES),
        fraction=r"0\.\d+",
    params:
        seed=config["seed"],
    log:
        log_of("scaling_data_{variant}@{fraction}"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/scaling_data.py"


rule scaling:
    input:
        data=expand(f"{RUN}/embedding_data/{{v}}.parquet", v=SCALING_POINTS),
        scores=expand(f"{RUN}/eval/{{v}}/{{task}}.json", v=SCALING_POINTS, task=EVAL_TASKS),
    output:
        fit=f"{RUN}/report/scaling.json",
        figure=report(
            f"{RUN}/report/scaling.png",
            category="Scaling",
            caption="../docs/report/scaling.rst",
        ),
    params:
        points=SCALING_POINTS,
    log:
        log_of("scaling"),
    threads: 1
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/scaling.py"
