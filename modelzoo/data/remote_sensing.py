"""Readers of the published remote-sensing layouts, and the synthetic data sets, as task data sets.

Layouts (``root`` is the folder a user points at):
- ``sen12ms``: ``ROIs<season>/{s1,s2,lc}_<scene>/ROIs<season>_{s1,s2,lc}_<scene>_p<patch>.tif``
  (S1 2 bands in dB, S2 13 bands, LC 4 MODIS layers, the first IGBP); labels via the DFC2020
  simplified-IGBP scheme.
- ``dfc2020``: ``ROIs0000_{validation,test}_{s1,s2,dfc}_0_p<N>.tif`` anywhere under root (DFC labels
  1..10; savanna 3 and snow 8 ignored); validation = train/val, test = test.
- ``power_plants``: ``labels.csv`` with columns ``image`` (a 12-band GeoTIFF path relative to root),
  ``generation``, ``fuel`` (name), the weather columns (default wind_speed, wind_direction,
  temperature, humidity) and optionally ``plume`` (a mask GeoTIFF path; none = empty mask).
- ``no2``: ``stations.csv`` (columns ``station``, ``no2``), ``sentinel-2/<station>.npy`` (12 bands,
  [12, H, W] or [H, W, 12]) and ``sentinel-5p/<station>.npy`` or ``.nc`` (netCDF-4: the first 2-D
  variable).
Patches are block-averaged to ``patch_size`` (label maps: nearest) so small models can train on them.
"""

import csv
import re
from pathlib import Path

import numpy as np

from modelzoo.data import synthetic
from modelzoo.data.readers import read_geotiff
from modelzoo.data.registry import register_dataset
from modelzoo.data.task_data import (
    DFC2020_CLASSES,
    TaskData,
    dfc_labels,
    preprocess_s1,
    preprocess_s2,
    split_task_data,
    with_test_split,
)
from modelzoo.errors import ZooError

SEN12MS_SOURCE = "https://mediatum.ub.tum.de/1474000"
DFC2020_SOURCE = "https://ieee-dataport.org/competitions/2020-ieee-grss-data-fusion-contest"
# IGBP class (1..17) -> DFC2020 simplified class (1..10), then DFC class -> our index (0..7, -1 ignored)
IGBP_TO_DFC = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 3, 9: 3, 10: 4, 11: 5, 12: 6, 13: 7,
               14: 6, 15: 8, 16: 9, 17: 10}
DFC_TO_INDEX = {1: 0, 2: 1, 4: 2, 5: 3, 6: 4, 7: 5, 9: 6, 10: 7}
WEATHER_COLUMNS = ["wind_speed", "wind_direction", "temperature", "humidity"]


def block_average(x: np.ndarray, size: int | None) -> np.ndarray:
    """[..., H, W] -> [..., size, size] by averaging blocks (H, W divisible by size)."""
    if size is None or x.shape[-1] == size:
        return x
    h, w = x.shape[-2:]
    if h % size or w % size:
        raise ZooError(f"patch_size {size} does not divide the {h}x{w} patches")
    return x.reshape(*x.shape[:-2], size, h // size, size, w // size).mean(axis=(-3, -1))


def center_crop(x: np.ndarray, size: int | None) -> np.ndarray:
    """The central [..., size, size] of [..., H, W] (None = unchanged)."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ZooError(f"crop {size} is larger than the {h}x{w} patches")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def nearest(labels: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or labels.shape[-1] == size:
        return labels
    step = labels.shape[-1] // size
    return labels[..., step // 2::step, step // 2::step][..., :size, :size]


def _map_labels(values: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.full(values.shape, -1, dtype=np.int64)
    for source, target in table.items():
        out[values == source] = target
    return out


def _paired(name: str, triplets: list[tuple[Path, Path, Path]], lc_map, patch_size,
            crop) -> dict:
    if not triplets:
        raise ZooError(f"dataset {name!r}: no s1/s2/label GeoTIFF triplets found")

    def image(path, bands):
        return block_average(center_crop(read_geotiff(path, bands), crop), patch_size)

    s1 = np.stack([image(a, 2) for a, _, _ in triplets])
    s2 = np.stack([image(b, 13) for _, b, _ in triplets])
    lc = np.stack([nearest(center_crop(lc_map(read_geotiff(c)[0]), crop), patch_size)
                   for _, _, c in triplets])
    single, multi = dfc_labels(lc)
    return {"s1": preprocess_s1(s1), "s2": preprocess_s2(s2), "land_cover": lc, "label": single,
            "multilabel": multi}


@register_dataset("sen12ms", val_size=0.15, source=SEN12MS_SOURCE, task_data=True)
def read_sen12ms(root: Path, patch_size: int | None = None, crop: int | None = None,
                 seed: int = 42) -> TaskData:
    """SEN12MS S1/S2/LC triplets; labels from the IGBP layer mapped to the 8 DFC2020 classes.
    ``crop``: central crop (e.g. 224 for Swin-T), then ``patch_size`` block averaging."""
    triplets = []
    for s1 in sorted(root.glob("ROIs*/s1_*/ROIs*_s1_*_p*.tif")):
        s2 = s1.parent.parent / s1.parent.name.replace("s1_", "s2_", 1) / \
            s1.name.replace("_s1_", "_s2_", 1)
        lc = s1.parent.parent / s1.parent.name.replace("s1_", "lc_", 1) / \
            s1.name.replace("_s1_", "_lc_", 1)
        triplets.append((s1, s2, lc))
    data = _paired("sen12ms", triplets,
                   lambda igbp: _map_labels(_map_labels(igbp.astype(np.int64), IGBP_TO_DFC),
                                            DFC_TO_INDEX), patch_size, crop)
    return split_task_data("sen12ms", data, ["s1", "s2"], DFC2020_CLASSES, 0.15, 0.15, seed)


@register_dataset("dfc2020", val_size=0.2, source=DFC2020_SOURCE, task_data=True)
def read_dfc2020(root: Path, patch_size: int | None = None, crop: int | None = None,
                 seed: int = 42) -> TaskData:
    """DFC2020: validation patches -> train / val (80/20), test patches -> test."""
    parts = {}
    for split in ("validation", "test"):
        triplets = []
        for s1 in sorted(root.rglob(f"ROIs0000_{split}_s1_0_p*.tif")):
            number = re.search(r"_p(\d+)\.tif$", s1.name).group(1)
            s2, dfc = (next(iter(root.rglob(f"ROIs0000_{split}_{kind}_0_p{number}.tif")),
                            s1.with_name(f"ROIs0000_{split}_{kind}_0_p{number}.tif"))
                       for kind in ("s2", "dfc"))
            triplets.append((s1, s2, dfc))
        parts[split] = _paired("dfc2020", triplets,
                               lambda v: _map_labels(v.astype(np.int64), DFC_TO_INDEX), patch_size,
                               crop)
    return with_test_split("dfc2020", parts["validation"], parts["test"], ["s1", "s2"],
                           DFC2020_CLASSES, 0.2, seed)


def _read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ZooError(f"missing file {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in required if not rows or c not in rows[0]]
    if missing:
        raise ZooError(f"{path}: missing column(s) {', '.join(missing)}" if rows
                       else f"{path}: no rows")
    return rows


def _number(path: Path, row: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ZooError(f"{path}: row {row + 2}, column {column}: {value!r} is not a number") from None


@register_dataset("power_plants", val_size=0.15, source="labels.csv + 12-band GeoTIFFs",
                  task_data=True)
def read_power_plants(root: Path, patch_size: int | None = None,
                      weather_columns: list[str] = WEATHER_COLUMNS, seed: int = 42) -> TaskData:
    """Power plants: 12-band images, weather, plume masks, generation, fuel type (70/15/15)."""
    labels = root / "labels.csv"
    rows = _read_csv(labels, ["image", "generation", "fuel", *weather_columns])
    fuels = sorted({r["fuel"] for r in rows})
    images, masks = [], []
    for r in rows:
        image = block_average(read_geotiff(root / r["image"], 12), patch_size)
        images.append(image)
        mask = read_geotiff(root / r["plume"])[0] if r.get("plume") else np.zeros(image.shape[1:])
        masks.append((block_average(mask[None], patch_size) > 0.5).astype(np.float32))
    weather = np.array([[_number(labels, i, c, r[c]) for c in weather_columns]
                        for i, r in enumerate(rows)], dtype=np.float32)
    weather = (weather - weather.mean(0)) / np.maximum(weather.std(0), 1e-6)
    data = {"image": preprocess_s2(np.stack(images)), "weather": weather,
            "plume": np.stack(masks),
            "generation": np.array([_number(labels, i, "generation", r["generation"])
                                    for i, r in enumerate(rows)], dtype=np.float32),
            "fuel": np.array([fuels.index(r["fuel"]) for r in rows], dtype=np.int64)}
    return split_task_data("power_plants", data, ["image", "weather"], fuels, 0.15, 0.15, seed)


def read_s5p(path: Path) -> np.ndarray:
    """A Sentinel-5P field as float32 [H, W]: ``.npy`` (no pickle) or netCDF-4 (first 2-D variable)."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ZooError(f"{path}: not a readable .npy array ({exc})") from None
    else:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                variables = [f[k] for k in f if isinstance(f[k], h5py.Dataset) and
                             len(f[k].shape) == 2]
                if not variables:
                    raise ZooError(f"{path}: no 2-D variable in this netCDF file")
                array = variables[0][()]
        except OSError as exc:
            raise ZooError(f"{path}: not a readable netCDF-4 file ({exc})") from None
    array = np.squeeze(np.asarray(array, dtype=np.float32))
    if array.ndim != 2:
        raise ZooError(f"{path}: expected a 2-D field, got shape {array.shape}")
    return np.nan_to_num(array)


@register_dataset("no2", val_size=0.15, source="stations.csv + sentinel-2/*.npy + sentinel-5p/*",
                  task_data=True)
def read_no2(root: Path, patch_size: int | None = None, seed: int = 42) -> TaskData:
    """NO2 stations: S2 patches, S5P fields and the measured NO2 (standardised; 70/15/15)."""
    stations = root / "stations.csv"
    rows = _read_csv(stations, ["station", "no2"])
    s2, s5p = [], []
    for r in rows:
        path = root / "sentinel-2" / f"{r['station']}.npy"
        if not path.is_file():
            raise ZooError(f"missing file {path}")
        try:
            patch = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise ZooError(f"{path}: not a readable .npy array ({exc})") from None
        if patch.ndim != 3 or 12 not in (patch.shape[0], patch.shape[-1]):
            raise ZooError(f"{path}: expected 12 bands, got shape {patch.shape}")
        s2.append(block_average(patch if patch.shape[0] == 12 else patch.transpose(2, 0, 1),
                                patch_size))
        field = next((p for p in (root / "sentinel-5p" / f"{r['station']}{ext}"
                                  for ext in (".npy", ".nc")) if p.is_file()), None)
        if field is None:
            raise ZooError(f"missing file {root / 'sentinel-5p' / (r['station'] + '.npy')} "
                           f"(or .nc)")
        s5p.append(read_s5p(field))
    no2 = np.array([_number(stations, i, "no2", r["no2"]) for i, r in enumerate(rows)])
    data = {"s2": preprocess_s2(np.stack(s2)), "s5p": np.stack(s5p)[:, None],
            "no2": ((no2 - no2.mean()) / max(no2.std(), 1e-6)).astype(np.float32)}
    return split_task_data("no2", data, ["s2", "s5p"], [], 0.15, 0.15, seed)


SYNTHETIC_SOURCE = "built in (synthetic, seeded; modelzoo.data.synthetic)"
register_dataset("synthetic_sen12ms", 0.15, SYNTHETIC_SOURCE, needs_root=False,
                 task_data=True)(synthetic.sen12ms_like)
register_dataset("synthetic_plants", 0.15, SYNTHETIC_SOURCE, needs_root=False,
                 task_data=True)(synthetic.power_plants)
register_dataset("synthetic_no2", 0.15, SYNTHETIC_SOURCE, needs_root=False,
                 task_data=True)(synthetic.no2_fields)
