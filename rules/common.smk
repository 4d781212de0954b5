# Path helpers and resource lookups shared by every rule file (logic lives in speed.workflow).


def res(kind, key):
    return config["resources"][kind].get(key, 0)


def log_of(name):
    return wf.log_path(config, name)


def gpu_resources():
    """Resources of a model-training or generator job (a GPU job on a GPU machine)."""
    return dict(
        mem_mb=res("gpu", "mem_mb"),
        runtime=res("gpu", "runtime"),
        gpu=res("gpu", "gpu"),
    )


def model_param(name):
    """params of a rule's `base` model: the `base` input path for a tiny model the workflow
    builds (it follows the input under a storage prefix), else the hub id or path."""
    path = wf.model_path(config, name)
    return lambda wildcards, input: input.base[0] if input.base else path


def llm_env(kind):
    """Conda env (--sdm conda) of a model-running rule: CUDA vLLM when its jobs ask for a GPU."""
    return "../envs/llm-gpu.yaml" if res(kind, "gpu") else "../envs/llm.yaml"


# Rule-file helpers live here (snakemake --lint: no functions among rules); they read the
# rule files' constants (VARIANTS, SHARDS, ...) only when called.
def teacher_params(max_tokens):
    """params of a teacher stage (rules/teacher.smk)."""
    t = config["teacher"]
    return dict(
        llm=wf.teacher_spec(config),
        sampling=dict(temperature=t["temperature"], top_p=t["top_p"], max_tokens=max_tokens),
        seed=config["seed"],
        price=wf.teacher_price(config),
        cache_dir=config["cache_dir"],
    )


def variant_inputs(wc):
    """The shards a corpus variant is assembled from (rules/synthesize.smk)."""
    if wc.variant == "teacher_only":
        return [f"{RUN}/synth/teacher_only.jsonl"]
    generator, revised = VARIANTS[wc.variant]
    stage = "revised" if revised else "raw"
    return [f"{RUN}/synth/{stage}/{generator}/{s}.jsonl" for s in SHARDS]


def eval_inputs(wc):
    """The held-out split (for a held-out task) and the trained model of an evaluation job
    (rules/embed.smk)."""
    held_out = EVAL_TASKS[wc.task].startswith(f"local:{RUN}/eval/heldout/")
    inputs = {"tasks": [f"{RUN}/eval/heldout"]} if held_out else {}
    if wc.variant != "base":
        inputs["model"] = f"{RUN}/embedding/{wc.variant}"
    return inputs


def eval_resources():
    """Resources of an evaluation job: the GPU rules', with the task's own from
    `evaluation.resources` (speed.workflow.eval_resources)."""
    return {k: _eval_resource(k) for k in ("mem_mb", "runtime", "gpu")}


def _eval_resource(key):
    def of(wildcards):
        return wf.eval_resources(config, wildcards.task)[key]

    return of

