"""Shards damaged after `prepare shards` finished: resume verifies and redoes them, and the reader
fails only the damaged shard's records, naming it.

Verification on resume compares each finished shard with its sidecar: the size always, the
SHA-256 only with --verify (hashing every shard on every rerun would cost a full read of the
directory). So bytes changed in place, size kept, are noticed only with --verify; the reader
still refuses such records when the ArrayRecord chunk hashes catch them.
"""

import hashlib
import json
import logging
import os

import numpy as np
import pytest
from conftest import tiny_config, write_images

from jaxcolor import prepare
from jaxcolor.data import pipeline, shards

NUM_SHARDS = 4
IMAGES = 16  # 4 records per shard


def _prepare(src, out, *extra):
    assert prepare.main(["shards", "--source", f"folder:{src}", "--out", out, "--size", "16",
                         "--crop", "0", "--workers", "0", "--num_shards", str(NUM_SHARDS),
                         "--quiet", *extra]) == 0


def _manifest(out):
    with open(os.path.join(out, shards.MANIFEST)) as f:
        return json.load(f)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _shard(out, i):
    return os.path.join(out, shards.shard_name(i, NUM_SHARDS))


def _records(out):
    """Every record of the directory, decoded, in global order (an exception where it fails)."""
    rows = []
    for index in range(_manifest(out)["count"]):
        try:
            rows.append(shards.load({"shards": out, "index": index, "path": str(index)}))
        except Exception as exc:  # noqa: BLE001 - the test looks at which ones fail, and how
            rows.append(exc)
    return rows


def _shard_indices(out, i):
    """The global record indices held by shard i, from the manifest's per-shard counts."""
    counts = [row["count"] for row in _manifest(out)["shards"]]
    start = sum(counts[:i])
    return set(range(start, start + counts[i]))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_record_bytes(path, record: bytes):
    """Changes bytes inside a record's data (not the padding), keeping the file's size."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = data.find(record)
    assert at >= 0
    data[at + 10: at + 20] = bytes(255 - b for b in data[at + 10: at + 20])
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.fixture
def dirs(tmp_path):
    """(source folder, a prepared directory to damage, a fresh prepare of the same folder)."""
    src = str(tmp_path / "img")
    write_images(src, IMAGES, size=(40, 30))
    out, ref = str(tmp_path / "out"), str(tmp_path / "ref")
    _prepare(src, out)
    _prepare(src, ref)
    return src, out, ref


def _assert_manifest_matches_disk(out):
    for row in _manifest(out)["shards"]:
        path = os.path.join(out, row["name"])
        assert row["bytes"] == os.path.getsize(path), row["name"]
        assert row["sha256"] == _sha256(path), row["name"]


def _assert_same_records(out, ref):
    got, want = _records(out), _records(ref)
    assert len(got) == len(want) == IMAGES
    for a, b in zip(got, want):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_truncated_shard_is_redone_on_resume(dirs, capsys):
    src, out, ref = dirs
    damaged = _shard(out, 1)
    kept = _shard(out, 0)
    mtime = os.stat(kept).st_mtime_ns
    _truncate(damaged)
    capsys.readouterr()
    _prepare(src, out)
    err = capsys.readouterr().err
    assert shards.shard_name(1, NUM_SHARDS) in err and "bytes" in err and "redoing" in err
    assert shards.shard_name(0, NUM_SHARDS) not in err
    assert os.stat(kept).st_mtime_ns == mtime  # intact shards are not rewritten
    _assert_manifest_matches_disk(out)
    assert _manifest(out)["shards"] == _manifest(ref)["shards"]
    _assert_same_records(out, ref)


def test_changed_bytes_are_redone_with_verify_only(dirs, capsys):
    src, out, ref = dirs
    damaged = _shard(out, 2)
    before = _manifest(out)["shards"][2]
    record = shards.encode(_records(ref)[min(_shard_indices(ref, 2))], "raw")
    _flip_record_bytes(damaged, record)
    assert os.path.getsize(damaged) == before["bytes"]
    flipped = _sha256(damaged)
    # Without --verify only sizes are compared: the shard is kept, and the manifest keeps the
    # digest recorded when it was written (not the file's).
    capsys.readouterr()
    _prepare(src, out)
    assert "redoing" not in capsys.readouterr().err
    assert _sha256(damaged) == flipped
    assert _manifest(out)["shards"][2] == before
    # The reader still refuses its records (the chunk hashes catch the change), naming the shard.
    bad = [i for i, r in enumerate(_records(out)) if isinstance(r, Exception)]
    assert bad and set(bad) <= _shard_indices(out, 2)
    # With --verify the digest is compared too: the shard is redone.
    _prepare(src, out, "--verify")
    err = capsys.readouterr().err
    assert shards.shard_name(2, NUM_SHARDS) in err and "sha256" in err and "redoing" in err
    assert _sha256(damaged) == before["sha256"]
    _assert_manifest_matches_disk(out)
    _assert_same_records(out, ref)
    # A rerun with everything intact changes nothing.
    mtimes = [os.stat(_shard(out, i)).st_mtime_ns for i in range(NUM_SHARDS)]
    _prepare(src, out, "--verify")
    assert "redoing" not in capsys.readouterr().err
    assert [os.stat(_shard(out, i)).st_mtime_ns for i in range(NUM_SHARDS)] == mtimes


def test_reader_fails_only_the_damaged_shard_and_names_it(dirs):
    _, out, ref = dirs
    damaged = _shard(out, 1)
    _truncate(damaged)
    got, want = _records(out), _records(ref)
    bad = {i for i, r in enumerate(got) if isinstance(r, Exception)}
    assert bad == _shard_indices(out, 1)
    for i in bad:
        message = str(got[i])
        assert damaged in message and "--verify" in message, message
    for i in set(range(IMAGES)) - bad:
        np.testing.assert_array_equal(got[i], want[i])


def test_pipeline_skips_only_the_damaged_shard(dirs, caplog):
    _, out, _ = dirs
    _truncate(_shard(out, 3))
    cfg = tiny_config(**{"data.source": "shards", "data.path": out, "data.crop": 0,
                         "data.val_split": "[:100%]", "data.train_split": "[:100%]"}).data
    with caplog.at_level(logging.WARNING):
        batches = list(pipeline.eval_batches(cfg, "[:100%]", batch_size=4))
    assert sum(float(b["weight"].sum()) for b in batches) == IMAGES - len(_shard_indices(out, 3))
    assert any(_shard(out, 3) in r.getMessage() for r in caplog.records)
    # Training reads shards in whole batches and stops at the first damaged record; the error
    # names the damaged shard (not a record of an intact one) and how to re-prepare it.
    it = iter(pipeline.train_dataset(cfg, 2, seed=0))
    with pytest.raises(OSError) as info:
        for _ in range(IMAGES // 2):  # one epoch: every record once
            next(it)
    assert _shard(out, 3) in str(info.value) and "--verify" in str(info.value)
