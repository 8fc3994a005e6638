"""nnraw.training.dataset: building (by-image split), crops, batch synthesis and the reference patch layout."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import TRAIN_DIR, need_shared
from nnraw.training.dataset import (BAYER_PATTERNS, REFERENCE_OFFSETS, CleanCropDataset, add_arguments, build_dataset,
                           make_training_batch, mosaic, reference_patch_batch, reference_patches, run,
                           split_by_image)
from nnraw.noise.model import NVIDIA_PROFILE, NoiseProfile


def few_photos(tmp_path, n=6):
    folder = TRAIN_DIR / "bsds432"
    need_shared(folder, f"{n} JPEGs in {folder}")
    files = sorted(folder.glob("*.jpg"))[:n]
    if len(files) < n:
        pytest.fail(f"need {n} JPEGs in {folder}, found {len(files)}")
    src = tmp_path / "src"
    src.mkdir()
    for f in files:
        shutil.copy(f, src / f.name)
    return src, files


def test_build_splits_by_image_without_overlap(tmp_path):
    src, files = few_photos(tmp_path)
    meta = build_dataset([src], tmp_path / "ds", val_fraction=0.34, crop=64, seed=7)
    assert len(meta["images"]) == len(files) and not meta["skipped"]
    train = (tmp_path / "ds" / "train.txt").read_text().splitlines()
    val = (tmp_path / "ds" / "val.txt").read_text().splitlines()
    train_src = {line.split("\t")[1] for line in train}
    val_src = {line.split("\t")[1] for line in val}
    assert len(val_src) == 2 and len(train_src) == len(files) - 2
    assert not train_src & val_src
    assert train_src | val_src == {str(src / f.name) for f in files}
    # Crops of each split come only from that split's images.
    tr, va = CleanCropDataset(tmp_path / "ds", "train", 64), CleanCropDataset(tmp_path / "ds", "val", 64)
    assert {im["source"] for im in tr.images} == train_src and {im["source"] for im in va.images} == val_src
    # Deterministic: the same seed gives the same split and the same pixels.
    again = build_dataset([src], tmp_path / "ds2", val_fraction=0.34, crop=64, seed=7)
    assert [im["split"] for im in again["images"]] == [im["split"] for im in meta["images"]]
    first = meta["images"][0]
    a = np.load(tmp_path / "ds" / first["file"])
    b = np.load(tmp_path / "ds2" / first["file"])
    assert np.array_equal(a, b) and a.dtype == np.uint16 and a.shape == (first["height"], first["width"], 3)
    # sRGB photos: downscaled by 2 (481x321 -> 240x160), unprocessed (linear: darker than sRGB).
    assert (first["width"], first["height"]) in ((240, 160), (160, 240))
    assert len(first["wb"]) == 3 and first["wb"][1] == 1 and len(first["rgb2cam"]) == 3
    assert a.mean() / 65535 < 0.3
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        build_dataset([src], tmp_path / "ds")


def test_build_from_raw_uses_reference_method(tmp_path, canon_dng):
    meta = build_dataset([canon_dng], tmp_path / "ds", val_fraction=0.0, crop=64)
    im = meta["images"][0]
    assert im["kind"] == "raw" and im["split"] == "train"
    # 1734x1156 visible -> half resolution 867x578 -> / 4 -> 216x144.
    assert (im["width"], im["height"]) == (216, 144)
    assert im["wb"][1] == 1 and im["wb"][0] > 1.5


def test_split_by_image_is_seeded():
    s1, s2 = split_by_image(100, 0.1, 0), split_by_image(100, 0.1, 0)
    assert s1 == s2 and s1.count("val") == 10
    assert split_by_image(100, 0.1, 1) != s1
    assert split_by_image(3, 0.05, 0).count("val") == 1
    with pytest.raises(ValueError, match=r"--val-fraction must be in \[0, 1\), got 1.5"):
        split_by_image(10, 1.5, 0)


def test_clean_crop_dataset(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for k, (h, w, split) in enumerate([(100, 140, "train"), (64, 64, "train"), (130, 70, "val")]):
        np.save(root / "images" / f"{k}.npy", rng.integers(0, 65535, (h, w, 3), dtype=np.uint16))
        images.append({"file": f"images/{k}.npy", "source": f"s{k}", "kind": "srgb", "width": w, "height": h,
                       "split": split, "wb": [2.0, 1.0, 1.5], "rgb2cam": None, "rgb_gain": 1.0})
    (root / "dataset.json").write_text(json.dumps({"format": "nnraw-clean-dataset", "images": images}))
    train = CleanCropDataset(root, "train", 32)
    assert len(train) == 3 * 4 + 2 * 2
    item = train[0]
    assert item["clean"].shape == (3, 32, 32) and item["clean"].dtype == torch.float32
    assert torch.equal(item["wb"], torch.tensor([2.0, 1.0, 1.5]))
    assert 0 <= item["clean"].min() and item["clean"].max() <= 1
    val = CleanCropDataset(root, "val", 32)
    assert len(val) == 4 * 2
    full = torch.from_numpy(np.load(root / "images/2.npy").astype(np.float32) / 65535).permute(2, 0, 1)
    i, y, x = val.items[0]
    assert y % 2 == 0 and x % 2 == 0
    assert torch.equal(val[0]["clean"], full[:, y:y + 32, x:x + 32])
    assert torch.equal(val[3]["clean"], val[3]["clean"])          # no random augmentation in val
    import pickle

    clone = pickle.loads(pickle.dumps(val))                     # as DataLoader workers get it
    assert clone._cache == {} and torch.equal(clone[0]["clean"], val[0]["clean"])
    with pytest.raises(ValueError, match="crop must be even and >= 4, got 33"):
        CleanCropDataset(root, "train", 33)
    with pytest.raises(FileNotFoundError, match="dataset.json not found"):
        CleanCropDataset(tmp_path, "train", 32)


def test_reference_patch_centres_cover_all_four_phases():
    for y0, x0 in REFERENCE_OFFSETS:
        assert y0 + 31 <= 66 and x0 + 31 <= 66
    yy, xx = torch.meshgrid(torch.arange(66.), torch.arange(66.), indexing="ij")
    tile = torch.stack([yy, xx])[None].expand(2, 2, 66, 66)
    patches = reference_patches(tile)
    assert patches.shape == (8, 2, 31, 31)
    centres = [(int(p[0, 15, 15]), int(p[1, 15, 15])) for p in patches[:4]]
    assert {(y % 2, x % 2) for y, x in centres} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for pattern in BAYER_PATTERNS:
        assert sorted(pattern[2 * (y % 2) + (x % 2)] for y, x in centres) == sorted(pattern)
    with pytest.raises(ValueError, match=r"tile must have shape \[N, C, 66, 66\], got \[1, 3, 64, 64\]"):
        reference_patches(torch.zeros(1, 3, 64, 64))


def test_make_training_batch(device):
    from nnraw.ops import edge_aware_demosaic

    g = torch.Generator(device=device).manual_seed(0)
    clean = torch.rand(4, 3, 66, 66, generator=g, device=device) * 0.8 + 0.1
    wb = torch.tensor([2.0, 1.0, 1.6], device=device)
    b1 = make_training_batch(clean, wb, NVIDIA_PROFILE, "random", g)
    b2 = make_training_batch(clean, wb, NVIDIA_PROFILE, b1["pattern"], g)
    assert b1["mosaic_noisy"].shape == (4, 1, 66, 66) and b1["predemosaic"].shape == (4, 3, 66, 66)
    assert not torch.equal(b1["mosaic_noisy"], b2["mosaic_noisy"])          # fresh noise every call
    assert torch.allclose(b1["sigma_map"], (0.005 * clean + 0.0001).sqrt())
    assert torch.allclose(b1["sigma_map_noisy"], NVIDIA_PROFILE.sigma_map(b1["predemosaic"].clamp(0, 1)))
    for i, pat in enumerate(b1["pattern"]):
        assert pat in BAYER_PATTERNS
        ref = edge_aware_demosaic(b1["mosaic_noisy"][i:i + 1], pat, wb.expand(1, 3).contiguous())
        assert torch.allclose(b1["predemosaic"][i:i + 1], ref, atol=1e-6)
        resid = (b1["mosaic_noisy"][i] - mosaic(clean[i:i + 1], pat)[0]).var()
        assert 0.5 < resid / (0.005 * clean[i].mean() + 0.0001) < 1.5
    # Noise-free profile: the mosaic is exactly the clean image sampled by the CFA.
    zero = make_training_batch(clean, wb, NoiseProfile((0, 0, 0), (0, 0, 0)), "GRBG", g)
    assert torch.equal(zero["mosaic_noisy"], mosaic(clean, "GRBG"))
    rnd = make_training_batch(clean, wb, "random", "RGGB", g)
    assert rnd["a"].shape == (4, 3) and (rnd["a"] > 0).all()
    patches = reference_patch_batch(b1)
    assert patches["clean"].shape == (16, 3, 31, 31) and patches["a"].shape == (16, 3) and len(patches["pattern"]) == 16
    with pytest.raises(ValueError, match="crop height and width must be even and >= 4, got 65x66"):
        make_training_batch(clean[:, :, :65], wb, NVIDIA_PROFILE)


def test_cli_build(tmp_path, capsys):
    src, files = few_photos(tmp_path, 3)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["build", str(src), "-o", str(tmp_path / "out"), "--crop", "64", "--val-fraction", "0.3"])
    assert run(args) == 0
    assert "3 images (2 train, 1 val)" in capsys.readouterr().out
    assert run(parser.parse_args(["build", str(tmp_path / "missing"), "-o", str(tmp_path / "o2")])) == 1
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_hold_out_sends_a_whole_source_to_validation(tmp_path):
    src, files = few_photos(tmp_path, n=6)
    other = tmp_path / "other"
    other.mkdir()
    for f in sorted(src.iterdir())[:2]:
        shutil.move(str(f), other / f.name)
    meta = build_dataset([src, other], tmp_path / "ds", val_fraction=0.0, crop=64, seed=3, hold_out=[other])
    split = {im["source"]: im["split"] for im in meta["images"]}
    assert {s for s, part in split.items() if part == "val"} == {str(p) for p in other.iterdir()}
    assert all(part == "train" for s, part in split.items() if s.startswith(str(src)))
    assert meta["hold_out"] == [str(other.resolve())]
    with pytest.raises(FileNotFoundError, match="--hold-out .*missing: no such folder"):
        build_dataset([src], tmp_path / "ds2", crop=64, hold_out=[tmp_path / "missing"])


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_training_batch_with_the_encoded_pre_demosaic(pattern):
    """encoding="srgb" gives the pre-demosaic `nnraw convert` makes (nnraw.encoding.pre_demosaic)."""
    from nnraw.encoding import pre_demosaic

    g = torch.Generator().manual_seed(5)
    clean = torch.rand(2, 3, 32, 32, generator=g) * 0.8
    wb = torch.tensor([[1.3, 1.0, 3.0], [2.0, 1.0, 1.6]])
    b = make_training_batch(clean, wb, NVIDIA_PROFILE, pattern, torch.Generator().manual_seed(1), encoding="srgb")
    assert torch.allclose(b["predemosaic"], pre_demosaic(b["mosaic_noisy"], pattern, wb, "srgb"))
    lin = make_training_batch(clean, wb, NVIDIA_PROFILE, pattern, torch.Generator().manual_seed(1))
    assert torch.equal(lin["mosaic_noisy"], b["mosaic_noisy"]) and not torch.equal(lin["predemosaic"], b["predemosaic"])
