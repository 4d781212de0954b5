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
