"""Every kind of bad config is refused before any job runs, with the key in the message."""

import copy

import pytest
import yaml

from tests.conftest import snakemake


def _with(config, path, value):
    cfg = copy.deepcopy(config)
    *parents, last = path
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


CASES = [
    ("unknown key", ("smoke", "requestz"), 3, "requestz"),
    ("unknown top-level key", ("seeed",), 3, "seeed"),
    ("wrong type", ("smoke", "requests"), "many", "requests"),
    ("missing required key", ("teacher", "price"), KeyError, "price"),
    ("bad enum", ("teacher", "backend"), "gpt", "backend"),
    ("bad model spec", ("models", "base"), {"tiny": {"hidden_size": 64}}, "num_layers"),
]


@pytest.mark.parametrize(("what", "path", "value", "key"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_refused_naming_the_key(workflow, what, path, value, key):
    cfg_file = workflow / "config" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text())
    cfg_file.write_text(yaml.safe_dump(_with(config, path, value), sort_keys=False))
    proc = snakemake(workflow, "--cores", "1", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out
    assert key in out
    assert not (workflow / "results").exists()


def test_default_config_is_valid(workflow):
    proc = snakemake(workflow, "-n", "--quiet")
    assert proc.returncode == 0
