"""The folder source on an image-folder layout (DIR/train, DIR/val or DIR/validation, DIR/test,
class subfolders inside), the `val` alias, and the colorfulness filter of the training split."""

import logging
import os
import re

import numpy as np
import pytest
from conftest import ROOT, tiny_config, write_images
from PIL import Image

from jaxcolor import config as config_lib
from jaxcolor import metrics, prepare, run_record
from jaxcolor.data import pipeline, sources

IMAGENETTE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "imagenette"))
CLASSES = ("n01", "n02", "n03")


def _layout(root, splits=("train", "val", "test"), per_class=4):
    """root/SPLIT/CLASS/00000i.png for each split and class; returns {split: sorted rel paths}."""
    out = {}
    for k, split in enumerate(splits):
        for j, cls in enumerate(CLASSES):
            write_images(os.path.join(root, split, cls), per_class, seed=10 * k + j)
        out[split] = sorted(os.path.join(split, cls, f"{i:06d}.png")
                            for cls in CLASSES for i in range(per_class))
    return out


def _rel(root, records):
    return [os.path.relpath(r["path"], root) for r in records]


def _folder_config(path, **kw):
    return tiny_config(**{"data.source": "folder", "data.path": path, **kw})


def test_split_folders_are_picked_by_split_name(tmp_path):
    root = str(tmp_path / "data")
    layout = _layout(root)
    (tmp_path / "data" / "train" / "notes.txt").write_text("not an image")
    for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert sorted(_rel(root, sources.folder_records(root, split))) == layout[folder], split
    # Without a name, a slice still covers the whole folder, as before.
    assert len(sources.folder_records(root, "[:100%]")) == 36


def test_val_is_an_alias_of_validation_wherever_a_split_is_parsed(tmp_path):
    assert sources.parse_split("val[:50%]") == ("validation", None, "50%")
    root = str(tmp_path / "data")
    _layout(root, splits=("train", "validation"))
    assert sources.folder_records(root, "val") == sources.folder_records(root, "validation")
    assert _rel(root, sources.folder_records(root, "val[1:3]"))[0].startswith("validation")
    flat = str(tmp_path / "flat")  # no split folders: the default fraction of validation
    write_images(flat, 20)
    assert sources.folder_records(flat, "val") == sources.folder_records(flat, "validation")
    assert len(sources.folder_records(flat, "val")) == 3  # [10%:25%]
    assert sources.sample_records("val", 4) == sources.sample_records("validation", 4)


def test_slices_inside_a_split_partition_it_exactly_and_hold_every_class(tmp_path):
    root = str(tmp_path / "data")
    layout = _layout(root, per_class=5)
    first = _rel(root, sources.folder_records(root, "validation[:50%]"))
    second = _rel(root, sources.folder_records(root, "val[50%:]"))
    whole = _rel(root, sources.folder_records(root, "val"))
    assert first + second == whole and sorted(whole) == layout["val"]
    assert len(first) == 8 and not set(first) & set(second)
    assert first == _rel(root, sources.folder_records(root, "validation[:50%]"))  # same order
    # The val folder sorted by path is sorted by class: a slice must still hold every class.
    for half in (first, second):
        assert {p.split(os.sep)[1] for p in half} == set(CLASSES), half
    assert [p.split(os.sep)[1] for p in _rel(root, sources.folder_records(root, "train[:3]"))] \
        == list(CLASSES)


def test_a_missing_split_folder_is_one_error_naming_the_folder_and_what_it_holds(tmp_path):
    root = str(tmp_path / "data")
    _layout(root, splits=("train", "val"))
    with pytest.raises(ValueError) as exc:
        sources.folder_records(root, "test[:50%]")
    message = str(exc.value)
    assert root in message and "train/ (12 images), val/ (12 images)" in message
    assert "no test/" in message and "\n" not in message
    # The trainer names the config field before it writes anything.
    _layout(str(tmp_path / "no_val"), splits=("train", "test"))
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.val_split: .*no val/ or "
                                                      r"validation/"):
        config_lib.validate(_folder_config(str(tmp_path / "no_val")))
    config_lib.validate(_folder_config(root))  # test/ missing: training does not read it


def test_both_val_and_validation_present_is_an_error_naming_them(tmp_path):
    root = str(tmp_path / "data")
    _layout(root, splits=("train", "val", "validation"))
    with pytest.raises(ValueError, match=r"holds both val/ and validation/"):
        sources.folder_records(root, "validation[:50%]")
    assert len(sources.folder_records(root, "train")) == 12  # unambiguous splits still read


def test_shards_of_a_split_folder_layout_select_the_same_photos(tmp_path):
    root = str(tmp_path / "data")
    _layout(root, per_class=2)
    out = str(tmp_path / "shards")
    prepare.write_shards(f"folder:{root}", out, crop=24, size=16, num_shards=2)
    shards_config = tiny_config(**{"data.source": "shards", "data.path": out, "data.crop": 24})
    for split in ("train", "val", "test", "validation[:50%]", "val[50%:]", "[:10]"):
        folder = _rel(root, sources.folder_records(root, split))
        assert [r["path"] for r in sources.records_for(shards_config.data, split)] == folder, split


def _photo_folder(root):
    """train/: 4 colorful photos, one 1-channel JPEG, one nearly gray RGB PNG; val/: the same
    kinds. Returns the file names of train/ that a threshold of 15 must drop."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder = os.path.join(root, split, "n01")
        os.makedirs(folder)
        for i in range(4):
            rgb = np.zeros((24, 24, 3), np.uint8)
            rgb[..., i % 3] = 200  # a saturated primary with some noise: colorfulness ~ 100
            rgb = (rgb + rng.integers(0, 40, rgb.shape)).astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(folder, f"color{i}.png"))
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8), "L").save(
            os.path.join(folder, "gray.jpg"))
        level = rng.integers(60, 200, (24, 24, 1))
        tinted = np.concatenate([level + 4, level, level - 3], axis=-1)  # colorfulness ~ 2
        Image.fromarray(tinted.astype(np.uint8)).save(os.path.join(folder, "near_gray.png"))
    return {"gray.jpg", "near_gray.png"}


def test_gray_and_near_gray_photos_are_dropped_from_train_and_counted_eval_keeps_them(
        tmp_path, caplog):
    root = str(tmp_path / "data")
    dropped = _photo_folder(root)
    config = _folder_config(root, **{"data.min_colorfulness": 15.0, "data.test_split": "val"})
    config_lib.validate(config)
    d = config.data
    caplog.set_level(logging.INFO, logger="jaxcolor.data.sources")
    train = {os.path.basename(r["path"]) for r in sources.records_for(d, "train")}
    assert train == {f"color{i}.png" for i in range(4)}
    logged = [r.getMessage() for r in caplog.records if "min_colorfulness" in r.getMessage()]
    assert len(logged) == 1 and "dropped 2 of 6 training images" in logged[0], logged
    assert "1 of them gray" in logged[0]  # the near-gray PNG is not exactly gray
    assert pipeline.dropped_for_colorfulness(d) == 2
    assert run_record.dataset_info(d)["splits"]["train"]["count"] == 4
    for split in ("validation", "val", "val[:100%]"):  # evaluation splits are never filtered
        names = {os.path.basename(r["path"]) for r in pipeline.eval_records(d, split)}
        assert dropped <= names and len(names) == 6, split
    # The training stream itself: two batches of 4 hold a whole epoch even of all 6 photos, and
    # every example is in color.
    it = iter(pipeline.train_dataset(d, 4, seed=0))
    ab = np.concatenate([next(it)["ab"], next(it)["ab"]])
    assert (np.abs(ab).reshape(8, -1).max(axis=1) > 0.05).all()


def test_min_colorfulness_zero_keeps_everything_and_measures_nothing(tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    _photo_folder(root)
    d = _folder_config(root).data
    assert d.min_colorfulness == 0.0  # the default: off

    def measure(path):
        raise AssertionError(f"measured {path} with the filter off")

    monkeypatch.setattr(sources, "file_colorfulness", measure)
    assert len(sources.records_for(d, "train")) == 6
    assert pipeline.dropped_for_colorfulness(d) is None


def test_colorfulness_is_the_evaluation_metric_and_zero_for_gray():
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 256, (8, 8, 1)), 3, axis=-1)
    assert sources.colorfulness(gray) == 0.0
    red = np.zeros((8, 8, 3))
    red[..., 0] = 255
    # mean rg 255, mean yb 127.5, no spread: 0.3 * hypot(255, 127.5)
    assert sources.colorfulness(red) == pytest.approx(0.3 * np.hypot(255, 127.5))
    photos = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose([sources.colorfulness(p) for p in photos],
                               np.asarray(metrics.colorfulness(photos / 255.0)), rtol=1e-4)


@pytest.mark.parametrize("overrides, field", [
    ({"data.min_colorfulness": -1.0}, "config.data.min_colorfulness=-1.0"),
    ({"data.min_colorfulness": 15.0, "data.source": "sample"}, "only the folder source"),
    ({"data.min_colorfulness": 15.0, "data.val_split": "train"}, "config.data.val_split='train' "
                                                                 "is the same split"),
])
def test_min_colorfulness_config_errors(tmp_path, overrides, field):
    root = str(tmp_path / "data")
    _layout(root, splits=("train", "val"), per_class=1)
    with pytest.raises(config_lib.ConfigError, match=re.escape(field)):
        config_lib.validate(_folder_config(root, **overrides))


@pytest.fixture
def imagenette_dir():
    if not os.path.isdir(IMAGENETTE):
        pytest.skip(f"shared Imagenette photos not found at {IMAGENETTE} (../shared is beside "
                    "the repo)")
    return IMAGENETTE


def test_shared_imagenette_lists_its_train_and_val_folders(imagenette_dir):
    files = sources.list_image_files(imagenette_dir)
    train = sources.folder_records(imagenette_dir, "train", files)
    val = sources.folder_records(imagenette_dir, "val", files)
    assert len(train) == 9_469 and len(val) == 3_925
    first = sources.folder_records(imagenette_dir, "validation[:50%]", files)
    second = sources.folder_records(imagenette_dir, "validation[50%:]", files)
    assert first + second == val and (len(first), len(second)) == (1_962, 1_963)
    assert len({os.path.basename(os.path.dirname(r["path"])) for r in first[:512]}) == 10
    with pytest.raises(ValueError, match="no test/"):
        sources.folder_records(imagenette_dir, "test", files)
