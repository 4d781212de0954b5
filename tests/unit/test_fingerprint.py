"""Model identities: full-content digests, the manifest that spares rehashing, hub revisions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from speed.llm import fingerprint as fp
from speed.llm.fingerprint import MANIFEST, fingerprint, hub_revision, write_digest

BIG = 80 * 2**20  # over the 64 MB the old fingerprint sampled above


def _model(folder: Path, middle: bytes = b"A") -> Path:
    """A config, a tokenizer and a sparse weight file over the old limit, `middle` at its
    middle: the head and tail (the first and last 8 MB) are zeros in every such folder."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 64}')
    (folder / "tokenizer.json").write_text('{"vocab": {}}')
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(BIG)
        f.seek(BIG // 2)
        f.write(middle)
    return folder


@pytest.fixture
def hashed(monkeypatch):
    """The files whose content gets read, in order."""
    seen: list[str] = []
    real = fp._hash_file

    def spy(path: Path):
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(fp, "_hash_file", spy)
    return seen


def _streamed(folder: Path) -> str:
    """The identity from the files alone: the manifest dropped, every file read."""
    (folder / MANIFEST).unlink(missing_ok=True)
    return fingerprint(folder)


def test_a_difference_in_the_middle_of_a_large_file_changes_the_identity(tmp_path):
    a = _model(tmp_path / "junior", b"A")
    b = _model(tmp_path / "senior", b"B")
    assert fingerprint(a) != fingerprint(b)
    assert write_digest(a) != write_digest(b)


def test_identity_from_the_manifest_is_the_streamed_one(tmp_path, hashed):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    assert sorted(hashed) == ["config.json", "model.safetensors", "tokenizer.json"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "tokenizer.json"}
    hashed.clear()
    assert fingerprint(folder) == ident
    assert hashed == []  # nothing read: the manifest was trusted
    assert _streamed(folder) == ident
    assert len(hashed) == 3


def test_a_fresh_folder_gets_a_manifest_on_first_use(tmp_path, hashed):
    folder = _model(tmp_path / "m")
    ident = fingerprint(folder)
    assert (folder / MANIFEST).exists() and len(hashed) == 3
    hashed.clear()
    assert fingerprint(folder) == ident and hashed == []


def test_a_rewrite_under_the_same_size_and_mtime_is_detected(tmp_path, hashed):
    folder = _model(tmp_path / "m", b"A")
    before = write_digest(folder)
    weights = folder / "model.safetensors"
    st = weights.stat()
    with open(weights, "r+b") as f:  # another fine-tune, same shapes, same size
        f.seek(BIG // 2)
        f.write(b"B")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # as rsync -t or touch -d would
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hashed.clear()
    after = fingerprint(folder)
    assert hashed == ["model.safetensors"]  # only the changed file is read again
    assert after != before
    assert after == _streamed(folder)


def test_a_copied_folder_keeps_its_identity(tmp_path, hashed):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    copy = Path(shutil.copytree(folder, tmp_path / "elsewhere" / "copy"))  # keeps mtimes
    hashed.clear()
    assert fingerprint(copy) == ident
    assert len(hashed) == 3  # new ctimes: hashed once...
    hashed.clear()
    assert fingerprint(copy) == ident and hashed == []  # ...and the copy has its own manifest


def test_adding_or_removing_a_counted_file_changes_the_identity(tmp_path):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    (folder / "generation_config.json").write_text("{}")
    added = fingerprint(folder)
    assert added != ident and added == _streamed(folder)
    (folder / "generation_config.json").unlink()
    assert fingerprint(folder) == ident


def test_the_manifest_is_not_trusted_when_a_listed_file_is_missing(tmp_path):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    (folder / "tokenizer.json").unlink()
    missing = fingerprint(folder)
    assert "tokenizer.json" not in json.loads((folder / MANIFEST).read_text())["files"]
    assert missing != ident and missing == _streamed(folder)


def test_logs_metrics_cards_checkpoints_and_hidden_files_do_not_count(tmp_path, hashed):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    (folder / "train.log").write_text("step 1")
    (folder / "metrics.json").write_text("{}")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")
    (folder / ".snakemake_timestamp").touch()
    (folder / "README.md").write_text("---\nbase_model: x\n---\n# a card\n")
    hashed.clear()
    assert fingerprint(folder) == ident and hashed == []
    assert _streamed(folder) == ident  # recomputed from scratch: still not counted


def test_a_corrupt_manifest_is_replaced(tmp_path):
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    (folder / MANIFEST).write_text("{not json")
    assert fingerprint(folder) == ident
    assert json.loads((folder / MANIFEST).read_text())["version"] == 1


def test_a_single_file_hashes_in_full(tmp_path):
    a, b = tmp_path / "a" / "data.bin", tmp_path / "b" / "data.bin"
    for path, middle in ((a, b"A"), (b, b"B")):
        path.parent.mkdir()
        with open(path, "wb") as f:
            f.truncate(BIG)
            f.seek(BIG // 2)
            f.write(middle)
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(None) is None


def _fake_cache(root: Path, repo: str, commit: str) -> None:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")


def test_hub_ids_are_keyed_by_the_cached_commit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "org/model" is no local folder
    repo = "org/model"
    name_only = hashlib.sha256(f"hub:{repo}".encode()).hexdigest()[:16]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert hub_revision(repo) is None and fingerprint(repo) == name_only

    c1, c2 = "1" * 40, "2" * 40
    _fake_cache(tmp_path / "hub", repo, c1)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # read at call time
    assert hub_revision(repo) == c1
    first = fingerprint(repo)
    assert first == hashlib.sha256(f"hub:{repo}@{c1}".encode()).hexdigest()[:16]
    _fake_cache(tmp_path / "hub", repo, c2)  # a newer download moves refs/main
    assert hub_revision(repo) == c2 and fingerprint(repo) not in (first, name_only)


def test_hub_cache_falls_back_to_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _fake_cache(tmp_path / "hf" / "hub", "org/model", "3" * 40)
    assert hub_revision("org/model") == "3" * 40
    shutil.rmtree(tmp_path / "hf" / "hub" / "models--org--model" / "snapshots")
    assert hub_revision("org/model") is None  # a ref to a missing snapshot loads nothing


def test_an_entry_not_older_than_the_manifest_clock_is_hashed_again(tmp_path, hashed):
    """A ctime in the tick the hashing began in could be shared by a later write."""
    folder = _model(tmp_path / "m")
    ident = write_digest(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    files = manifest["files"]
    clock = manifest["clock_ns"] = files["model.safetensors"]["ctime_ns"]  # the newest
    (folder / MANIFEST).write_text(json.dumps(manifest))
    hashed.clear()
    assert fingerprint(folder) == ident
    assert sorted(hashed) == sorted(r for r, e in files.items() if e["ctime_ns"] >= clock)
    assert "model.safetensors" in hashed


def test_the_mteb_model_revision_is_the_model_identity(tmp_path, monkeypatch):
    """mteb files results by (name, revision): two fine-tunes that differ only in the middle of
    their weights get two revisions, and a hub id its cached commit's identity."""
    from speed.eval.run import model_identity

    a = _model(tmp_path / "junior", b"A")
    b = _model(tmp_path / "senior", b"B")
    rev_a, rev_b = (model_identity("m", str(p), None, "org/m")[1] for p in (a, b))
    assert (rev_a, rev_b) == (fingerprint(a), fingerprint(b)) and rev_a != rev_b
    monkeypatch.chdir(tmp_path)
    _fake_cache(tmp_path / "hub", "org/model", "4" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    rev = model_identity("org/model", "org/model", None)[1]
    assert rev == hashlib.sha256(f"hub:org/model@{'4' * 40}".encode()).hexdigest()[:16]
