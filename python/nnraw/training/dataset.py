"""Training data: clean linear camera-RGB images, and noisy mosaics synthesised from them per batch.

Three parts:

* ``nnraw dataset build SRC... -o DIR`` (:func:`build_dataset`): turns raw files and sRGB photos into
  clean linear camera RGB, one ``images/<k>.npy`` (uint16, [H, W, 3], value / 65535 = linear RGB in
  [0, 1]) per image, plus ``dataset.json`` (per-image source, size, white balance, colour matrix and
  split) and ``train.txt`` / ``val.txt`` (the split, by image).

  - raw files, the reference method: half-resolution RGB (R, mean of the two G, B of each 2x2 CFA
    block), then an area downscale by 4 (each output pixel averages 16 raw pixels, 32 for green), so
    the noise of an ISO-100 shot vanishes;
  - sRGB photos: an area downscale by >= 2 (removes JPEG blocking and demosaicing traces), then
    unprocessing (Brooks et al. 2019, :mod:`nnraw.training.unprocess`) with per-image random colour matrix and
    white-balance gains, stored in the metadata.

* :class:`CleanCropDataset`: random crops (train) or a fixed grid of crops (val) of a built directory.

* :func:`make_training_batch`: mosaic, fresh Poisson-Gaussian noise, edge-aware pre-demosaic and the
  noise-level map, on whatever device the batch is on -- every epoch sees new noise.
  :func:`reference_patches` cuts the reference system's four 31x31 patches out of 66x66 tiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from nnraw.noise.model import NoiseProfile, add_noise, noise_params, random_noise_params, sigma_map

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def xtrans_patterns() -> tuple[str, ...]:
    """The X-Trans layout at each of its 36 shifts (nnraw.cfa.XTRANS shifted, row-major by shift). The
    layout repeats under a (3, 3) shift, so these are 18 distinct blocks, each twice: a uniform draw
    over the tuple is uniform over the phases."""
    from nnraw.cfa import XTRANS, shifted

    return tuple(shifted(XTRANS, dy, dx) for dy in range(6) for dx in range(6))


def _valid_pattern(p) -> bool:
    from nnraw.cfa import is_xtrans

    return p in BAYER_PATTERNS or (isinstance(p, str) and len(p) == 36 and not set(p) - set("RGB") and is_xtrans(p))


# ==================================================================================================
# Batch synthesis
# ==================================================================================================
def mosaic(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    """CFA-sample Tensor[N, 3, H, W] with ``pattern`` (Bayer, or a 36-letter X-Trans phase) ->
    Tensor[N, 1, H, W] (H, W even)."""
    from nnraw.ops.demosaic import cfa_masks

    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"mosaic: rgb must have shape [N, 3, H, W], got {list(rgb.shape)}")
    if not _valid_pattern(pattern):
        raise ValueError(f"mosaic: pattern must be one of {BAYER_PATTERNS} or an X-Trans phase, got {pattern!r}")
    if len(pattern) == 36:
        from nnraw import cfa

        masks = torch.from_numpy(cfa.masks(pattern, rgb.shape[-2], rgb.shape[-1])).to(rgb.device, rgb.dtype)
    else:
        masks = cfa_masks(pattern, rgb.shape[-2], rgb.shape[-1], rgb.device, rgb.dtype)
    return (rgb * masks).sum(1, keepdim=True)


def _patterns_for(pattern: Union[str, Sequence[str]], n: int, generator: torch.Generator | None) -> list[str]:
    if isinstance(pattern, str) and pattern in ("random", "xtrans"):
        choices = BAYER_PATTERNS if pattern == "random" else xtrans_patterns()
        dev = generator.device if generator is not None else "cpu"
        idx = torch.randint(0, len(choices), (n,), generator=generator, device=dev).tolist()
        return [choices[i] for i in idx]
    if isinstance(pattern, str):
        if not _valid_pattern(pattern):
            raise ValueError(f"make_training_batch: pattern must be one of {BAYER_PATTERNS}, an X-Trans phase, "
                             f"'random' (a Bayer one per crop) or 'xtrans' (an X-Trans phase per crop), got {pattern!r}")
        return [pattern] * n
    patterns = list(pattern)
    if len(patterns) != n or not all(_valid_pattern(p) for p in patterns):
        raise ValueError(f"make_training_batch: need {n} patterns from {BAYER_PATTERNS} or X-Trans phases, got {patterns}")
    return patterns


def make_training_batch(clean: torch.Tensor, wb: torch.Tensor,
                        profiles: Union[NoiseProfile, Sequence[NoiseProfile], tuple, str] = "random",
                        pattern: Union[str, Sequence[str]] = "RGGB",
                        generator: torch.Generator | None = None, encoding: str = "linear") -> dict:
    """Synthesise a noisy training batch from clean crops (fresh noise at every call).

    Args:
        clean: Tensor[N, 3, H, W] clean linear camera RGB in [0, 1], H and W even (>= 4).
        wb: Tensor[3] or Tensor[N, 3] as-shot white-balance gains (used by the pre-demosaic only).
        profiles: a NoiseProfile, a list of N, ``(a, b)`` tensors ([N, 3], [N], [3]) or ``"random"``
            (:func:`nnraw.noise.model.random_noise_params`, for noise-conditioned networks).
        pattern: a Bayer pattern (or 36-letter X-Trans phase) for all samples, a list of N, ``"random"``
            (a Bayer pattern per sample) or ``"xtrans"`` (one of the 36 X-Trans phases per sample).
        generator: torch.Generator on ``clean``'s device, for reproducible batches.
        encoding: the domain of the pre-demosaic (:func:`nnraw.encoding.pre_demosaic`): "linear"
            (the seed) or "srgb" (white balanced and encoded, as ``nnraw convert`` does).

    Returns:
        dict with
          ``mosaic_noisy`` Tensor[N, 1, H, W] noisy mosaic (clipped to [0, 1]),
          ``predemosaic``  Tensor[N, 3, H, W] edge-aware demosaic of it (camera RGB, no WB),
          ``sigma_map``    Tensor[N, 3, H, W] noise std per pixel and channel, sqrt(a x + b) of
                           ``clean`` (the oracle level),
          ``sigma_map_noisy`` the same computed from ``predemosaic`` (clamped to [0, 1]): what
                           inference can compute (``profile.sigma_map(predemosaic)``), so a network
                           trained on it sees the same noise-level input at inference,
          ``clean``        Tensor[N, 3, H, W] (the target),
          ``a``, ``b``     Tensor[N, 3], ``wb`` Tensor[N, 3], ``pattern`` list[str].
    """
    from nnraw.encoding import pre_demosaic

    if clean.dim() != 4 or clean.shape[1] != 3:
        raise ValueError(f"make_training_batch: clean must have shape [N, 3, H, W], got {list(clean.shape)}")
    n, _, h, w = clean.shape
    if h % 2 or w % 2 or h < 4 or w < 4:
        raise ValueError(f"make_training_batch: crop height and width must be even and >= 4, got {h}x{w}")
    clean = clean.float() if clean.dtype not in (torch.float32, torch.float64) else clean
    wb = torch.as_tensor(wb, dtype=clean.dtype, device=clean.device)
    if wb.shape == (3,):
        wb = wb.expand(n, 3)
    if wb.shape != (n, 3):
        raise ValueError(f"make_training_batch: wb must have shape [3] or [N, 3] = [{n}, 3], got {list(wb.shape)}")
    if isinstance(profiles, str):
        if profiles != "random":
            raise ValueError(f"make_training_batch: profiles must be a NoiseProfile, a list, (a, b) or 'random', got {profiles!r}")
        a, b = random_noise_params(n, generator, device=clean.device, dtype=clean.dtype)
    else:
        a, b = noise_params(profiles, n, clean.device, clean.dtype)
    patterns = _patterns_for(pattern, n, generator)

    mosaic_noisy = torch.empty(n, 1, h, w, device=clean.device, dtype=clean.dtype)
    predemosaic = torch.empty_like(clean)
    for pat in dict.fromkeys(patterns):          # one pass per distinct pattern, in order of appearance
        idx = torch.tensor([i for i, p in enumerate(patterns) if p == pat], device=clean.device)
        if len(pat) == 36:   # per-pixel independent noise: noising RGB then sampling is the same draw law
            noisy = mosaic(add_noise(clean[idx], (a[idx], b[idx]), generator=generator), pat)
        else:
            m = mosaic(clean[idx], pat)
            noisy = add_noise(m, (a[idx], b[idx]), generator=generator, pattern=pat)
        mosaic_noisy[idx] = noisy
        predemosaic[idx] = pre_demosaic(noisy, pat, wb[idx].contiguous(), encoding)
    return {
        "mosaic_noisy": mosaic_noisy,
        "predemosaic": predemosaic,
        "sigma_map": sigma_map(clean, a, b),
        "sigma_map_noisy": sigma_map(predemosaic, a, b),
        "clean": clean,
        "a": a, "b": b, "wb": wb, "pattern": patterns,
    }


#: The reference layout: 66x66 tile -> four 31x31 patches; top-left corners (y, x).
REFERENCE_TILE = 66
REFERENCE_PATCH = 31
REFERENCE_OFFSETS = ((1, 1), (1, 34), (34, 1), (34, 34))


def reference_patches(tile: torch.Tensor) -> torch.Tensor:
    """Cut the reference system's four 31x31 patches out of 66x66 tiles.

    The patches' centre pixels (offset + 15) are at (16, 16), (16, 49), (49, 16), (49, 49) of the
    tile: rows and columns of both parities, so for any Bayer pattern the four centres sit on the
    four CFA sites (R, G1, G2, B) and no colour is favoured by the central-pixel loss.

    Args:
        tile: Tensor[N, C, 66, 66] (clean, noisy, pre-demosaiced ... cut them all the same way).
    Returns:
        Tensor[4N, C, 31, 31], patch k of tile i at index 4 i + k.
    """
    if tile.dim() != 4 or tile.shape[-2:] != (REFERENCE_TILE, REFERENCE_TILE):
        raise ValueError(f"reference_patches: tile must have shape [N, C, 66, 66], got {list(tile.shape)}")
    p = REFERENCE_PATCH
    patches = [tile[:, :, y:y + p, x:x + p] for y, x in REFERENCE_OFFSETS]
    return torch.stack(patches, 1).flatten(0, 1)


def reference_patch_batch(batch: dict) -> dict:
    """Apply :func:`reference_patches` to every image tensor of a :func:`make_training_batch` result
    made from 66x66 tiles; per-sample vectors (a, b, wb) and patterns are repeated 4 times."""
    out = {}
    for key, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            out[key] = reference_patches(v)
        elif isinstance(v, torch.Tensor):
            out[key] = v.repeat_interleave(4, 0)
        elif isinstance(v, list):
            out[key] = [p for p in v for _ in range(4)]
        else:
            out[key] = v
    return out


# ==================================================================================================
# Building a dataset directory
# ==================================================================================================
RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".pef", ".orf",
                  ".rw2", ".raf", ".srw", ".kdc", ".dcr", ".3fr", ".erf", ".mos", ".mrw", ".rwl", ".iiq"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
FORMAT = "nnraw-clean-dataset"
RAW_DOWNSCALE = 4


def find_sources(sources: Iterable[Union[str, Path]]) -> list[Path]:
    """Files under ``sources`` (files or folders, searched recursively) with a raw or image
    extension, sorted by path so that builds are reproducible."""
    found: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            found += [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in RAW_EXTENSIONS | IMAGE_EXTENSIONS]
        elif src.is_file():
            if src.suffix.lower() not in RAW_EXTENSIONS | IMAGE_EXTENSIONS:
                raise ValueError(f"nnraw dataset build: {src}: not a raw file or image (extension {src.suffix!r})")
            found.append(src)
        else:
            raise FileNotFoundError(f"nnraw dataset build: {src}: no such file or folder")
    return sorted(set(found), key=lambda p: str(p))


def area_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downscale of [H, W, C] by an integer factor (the edge remainder is cropped)."""
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    x = image[:h, :w].astype(np.float64)
    return x.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def clean_from_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference method: half-resolution RGB (R, mean of the two G, B per 2x2 CFA block) of a
    Bayer raw, normalised by black/white level, then area-downscaled by 4.

    Returns:
        (float64 [H, W, 3] linear camera RGB in [0, 1], wb float64 [3] as-shot gains with G = 1).
    """
    try:
        from nnraw.io.raw import RawReadError, read_raw
    except ImportError:
        read_raw = None
    if read_raw is not None:
        try:
            raw = read_raw(path)
        except RawReadError as exc:
            raise ValueError(f"nnraw dataset build: cannot read {path} as a raw file: {exc.reason}") from exc
        if len(raw.pattern) == 36:   # read_raw reads X-Trans since #18; this path is Bayer-only
            raise ValueError(f"nnraw dataset build: {path}: X-Trans (6x6 CFA) raws are not supported here yet (Bayer only)")
        data, pattern = raw.mosaic.astype(np.float64), raw.pattern
        h, w = data.shape
        black = np.tile(np.asarray(raw.black_levels, np.float64), (h // 2, w // 2))
        norm = (data - black) / (float(raw.white_level) - black)
        wb = np.asarray(raw.wb, np.float64)
    else:
        norm, pattern, wb = _normalised_mosaic_rawpy(path)
    planes: dict[str, list[np.ndarray]] = {"R": [], "G": [], "B": []}
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        planes[colour].append(norm[dy::2, dx::2])
    half = np.stack([planes["R"][0], (planes["G"][0] + planes["G"][1]) / 2, planes["B"][0]], -1)
    if not (wb.shape == (3,) and np.all(np.isfinite(wb)) and np.all(wb > 0)):
        wb = np.array([2.0, 1.0, 1.5])
    wb = wb / wb[1]
    return np.clip(area_downscale(half, RAW_DOWNSCALE), 0, 1), wb


def _normalised_mosaic_rawpy(path: Path) -> tuple[np.ndarray, str, np.ndarray]:
    """Fallback reader (rawpy directly, when nnraw.io.raw is not available): normalised mosaic with
    even size, its pattern, and as-shot (else daylight) white balance."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            data = raw.raw_image_visible.astype(np.float64)
            pat = raw.raw_pattern
            desc = raw.color_desc.decode()
            blacks = np.asarray(raw.black_level_per_channel, np.float64)
            white = float(raw.white_level)
            cam_wb = np.asarray(raw.camera_whitebalance[:3], np.float64)
            day_wb = np.asarray(raw.daylight_whitebalance[:3], np.float64)
    except rawpy.LibRawError as exc:
        raise ValueError(f"nnraw dataset build: cannot read {path} as a raw file: {exc}") from exc
    if pat is None or pat.shape != (2, 2) or sorted(desc[i] for i in pat.flatten()) != ["B", "G", "G", "R"]:
        raise ValueError(f"nnraw dataset build: {path}: not a 2x2 Bayer RGB raw (pattern {pat}, colours {desc!r})")
    h, w = (data.shape[0] // 2) * 2, (data.shape[1] // 2) * 2
    black = np.zeros((2, 2))
    for k, idx in enumerate(pat.flatten()):
        black[k // 2, k % 2] = blacks[idx]
    black_map = np.tile(black, (h // 2, w // 2))
    norm = (data[:h, :w] - black_map) / (white - black_map)
    pattern = "".join(desc[i] for i in pat.flatten())
    wb = cam_wb if np.all(cam_wb > 0) else day_wb
    return norm, pattern, wb


def clean_from_srgb(path: Path, downscale: int, generator: torch.Generator) -> tuple[np.ndarray, dict]:
    """sRGB photo -> area downscale by ``downscale`` (>= 2; removes JPEG blocking and demosaicing
    traces) -> unprocess with a random camera model. Returns (float64 [H, W, 3], camera dict)."""
    from PIL import Image

    from nnraw.training.unprocess import unprocess

    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("RGB", "I;16") else im
            arr = np.asarray(im)
    except OSError as exc:
        raise ValueError(f"nnraw dataset build: cannot read {path} as an image: {exc}") from exc
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    srgb = area_downscale(arr.astype(np.float64) / scale, downscale)
    x = torch.from_numpy(srgb).permute(2, 0, 1)[None]
    linear, params = unprocess(x, generator=generator)
    camera = {"wb": params.wb[0].tolist(), "rgb2cam": params.rgb2cam[0].tolist(),
              "rgb_gain": float(params.rgb_gain[0])}
    return linear[0].permute(1, 2, 0).numpy(), camera


def split_by_image(n: int, val_fraction: float, seed: int) -> list[str]:
    """'train' / 'val' per image: a seeded permutation, the first round(n * fraction) are val
    (at least one when n >= 2 and fraction > 0)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"nnraw dataset build: --val-fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    order = np.random.default_rng(seed).permutation(n)
    split = ["train"] * n
    for i in order[:n_val]:
        split[int(i)] = "val"
    return split


def _atomic_save(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_dataset(sources: Sequence[Union[str, Path]], out_dir: Union[str, Path], val_fraction: float = 0.1,
                  crop: int = 128, seed: int = 0, downscale: int = 2, limit: int | None = None,
                  progress: bool = False, hold_out: Sequence[Union[str, Path]] = ()) -> dict:
    """Build a clean-image dataset directory (see module docstring). Returns the metadata dict.

    Images smaller than ``crop`` after downscaling are skipped (listed under "skipped"). Every image
    under a folder of ``hold_out`` goes to the validation split (a whole image source held out, so
    validation measures what a photo from elsewhere gets); ``val_fraction`` splits the others.
    """
    out = Path(out_dir)
    if crop < 4 or crop % 2:
        raise ValueError(f"nnraw dataset build: --crop must be even and >= 4, got {crop}")
    if downscale < 2:
        raise ValueError(f"nnraw dataset build: --downscale must be >= 2 for sRGB photos (JPEG artefacts), got {downscale}")
    if (out / "dataset.json").exists():
        raise FileExistsError(f"nnraw dataset build: {out} already holds a dataset (dataset.json); choose a new folder")
    files = find_sources(sources)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"nnraw dataset build: no raw files or images found in {', '.join(map(str, sources))}")
    held = [Path(h).resolve() for h in hold_out]
    for h in held:
        if not h.is_dir():
            raise FileNotFoundError(f"nnraw dataset build: --hold-out {h}: no such folder")
    is_held = [any(h in p.resolve().parents for h in held) for p in files]
    rest = [k for k, flag in enumerate(is_held) if not flag]
    rest_split = split_by_image(len(rest), val_fraction, seed) if rest else []
    split = ["val"] * len(files)
    for k, part in zip(rest, rest_split):
        split[k] = part
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, skipped = [], []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="nnraw dataset build", unit="image")
    for k, path in enumerate(iterator):
        gen = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{path.name}".encode()).digest()[:8], "little"))
        if path.suffix.lower() in RAW_EXTENSIONS:
            rgb, wb = clean_from_raw(path)
            camera = {"wb": wb.tolist(), "rgb2cam": None, "rgb_gain": 1.0}
            kind = "raw"
        else:
            rgb, camera = clean_from_srgb(path, downscale, gen)
            kind = "srgb"
        h, w = rgb.shape[:2]
        if h < crop or w < crop:
            skipped.append({"source": str(path), "reason": f"{w}x{h} after downscaling is smaller than the crop {crop}"})
            continue
        name = f"images/{len(images):05d}.npy"
        data = np.round(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)
        _atomic_save(out / name, lambda tmp: np.save(open(tmp, "wb"), data))
        images.append({"file": name, "source": str(path), "kind": kind, "width": w, "height": h,
                       "split": split[k], **camera})
    meta = {"format": FORMAT, "version": 1, "crop": crop, "seed": seed, "val_fraction": val_fraction,
            "hold_out": [str(h) for h in held],
            "downscale_srgb": downscale, "downscale_raw": RAW_DOWNSCALE,
            "encoding": "uint16 [H, W, 3], value / 65535 = linear camera RGB in [0, 1]",
            "images": images, "skipped": skipped}
    for part in ("train", "val"):
        lines = "".join(f"{im['file']}\t{im['source']}\n" for im in images if im["split"] == part)
        _atomic_save(out / f"{part}.txt", lambda tmp, s=lines: Path(tmp).write_text(s))
    _atomic_save(out / "dataset.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1) + "\n"))
    return meta


# ==================================================================================================
# Loading crops
# ==================================================================================================
class CleanCropDataset(torch.utils.data.Dataset):
    """Clean crops of a built dataset directory.

    ``split="train"``: per epoch, each image contributes ``(H // crop) * (W // crop)`` crops (at
    least one) at random even offsets, with random flips and transposition (the 8 symmetries of
    the square). The CFA is applied later, to the crop, by :func:`make_training_batch`, so these
    augmentations never mix up colour phases; offsets stay even so crops keep the source's 2x2 grid.
    ``split="val"``: a fixed grid of non-overlapping crops, no augmentation (reproducible).

    Items: ``dict(clean=Tensor[3, crop, crop] float32 linear camera RGB in [0, 1], wb=Tensor[3],
    image=int)``.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", crop: int = 128, augment: bool | None = None):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"CleanCropDataset: {meta_path} not found (build it with `nnraw dataset build`)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"CleanCropDataset: {meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        if split not in ("train", "val"):
            raise ValueError(f"CleanCropDataset: split must be 'train' or 'val', got {split!r}")
        if crop < 4 or crop % 2:
            raise ValueError(f"CleanCropDataset: crop must be even and >= 4, got {crop}")
        self.split, self.crop = split, crop
        self.augment = (split == "train") if augment is None else augment
        self.images = [im for im in meta["images"] if im["split"] == split and im["height"] >= crop and im["width"] >= crop]
        if not self.images:
            raise ValueError(f"CleanCropDataset: no {split} images of at least {crop}x{crop} in {self.root}")
        self._cache: dict[int, np.ndarray] = {}
        if split == "val":
            self.items = []
            for i, im in enumerate(self.images):
                ny, nx = im["height"] // crop, im["width"] // crop
                oy = ((im["height"] - ny * crop) // 2) & ~1
                ox = ((im["width"] - nx * crop) // 2) & ~1
                self.items += [(i, oy + y * crop, ox + x * crop) for y in range(ny) for x in range(nx)]
        else:
            counts = [max(1, (im["height"] // crop) * (im["width"] // crop)) for im in self.images]
            self.items = [(i, -1, -1) for i, c in enumerate(counts) for _ in range(c)]

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:
        # DataLoader workers (spawn) get the dataset pickled: reopen memory maps there, never copy them.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def _array(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = np.load(self.root / self.images[i]["file"], mmap_mode="r")
        return self._cache[i]

    def __getitem__(self, index: int) -> dict:
        i, y, x = self.items[index]
        im, c = self.images[i], self.crop
        if y < 0:
            y = 2 * int(torch.randint(0, (im["height"] - c) // 2 + 1, ()))
            x = 2 * int(torch.randint(0, (im["width"] - c) // 2 + 1, ()))
        patch = self._array(i)[y:y + c, x:x + c]                      # [c, c, 3] uint16 view
        if self.augment:                                                # numpy views: one copy below
            flips = torch.randint(0, 2, (3,)).tolist()
            if flips[0]:
                patch = patch[:, ::-1]
            if flips[1]:
                patch = patch[::-1]
            if flips[2]:
                patch = patch.swapaxes(0, 1)
        # In numpy: a torch op on a small tensor pays the intra-op thread pool's wake-up cost.
        chw = np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32) / np.float32(65535.0)
        clean = torch.from_numpy(chw)
        return {"clean": clean, "wb": torch.tensor(im["wb"], dtype=torch.float32), "image": i}


# ==================================================================================================
# Command line: nnraw dataset build
# ==================================================================================================
def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="raw files and sRGB photos -> clean linear camera-RGB training images")
    b.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="raw files, images, or folders of them")
    b.add_argument("-o", "--output", type=Path, required=True, help="new dataset folder")
    b.add_argument("--val-fraction", type=float, default=0.1, help="fraction of IMAGES held out (default 0.1)")
    b.add_argument("--crop", type=int, default=128, help="crop size; smaller images are skipped (default 128)")
    b.add_argument("--seed", type=int, default=0, help="seed for the split and the unprocessing (default 0)")
    b.add_argument("--downscale", type=int, default=2, help="area downscale of sRGB photos, >= 2 (default 2)")
    b.add_argument("--limit", type=int, default=None, help="use only the first N sources (sorted by path)")
    b.add_argument("--hold-out", type=Path, action="append", default=[], metavar="DIR",
                   help="every image under DIR goes to the validation split (repeatable): hold a whole source out")


def run(args) -> int:
    import sys

    try:
        meta = build_dataset(args.sources, args.output, args.val_fraction, args.crop, args.seed,
                             args.downscale, args.limit, progress=sys.stderr.isatty(), hold_out=args.hold_out)
    except (OSError, ValueError) as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    n_train = sum(im["split"] == "train" for im in meta["images"])
    n_val = len(meta["images"]) - n_train
    print(f"{args.output}: {len(meta['images'])} images ({n_train} train, {n_val} val), "
          f"{len(meta['skipped'])} skipped")
    return 0
