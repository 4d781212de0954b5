# Path helpers and resource lookups shared by every rule file (logic lives in speed.workflow).


def res(kind, key):
    return config["resources"][kind].get(key, 0)


def log_of(name):
    return wf.log_path(config, name)
