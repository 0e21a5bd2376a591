"""Seeded synthetic Sentinel-like data for demos and tests. SYNTHETIC: not real satellite data.

The generator draws land-cover maps (Voronoi cells of the 8 DFC2020 classes), renders them as
co-registered Sentinel-1 backscatter (dB, 2 bands, speckled) and Sentinel-2 reflectance
(0..10,000, 13 or 12 bands) from a fixed per-class spectral signature, and adds:
- power plants: a Gaussian plume from the stack, elongated down-wind, whose strength grows with the
  power generated and whose tint depends on the fuel type; weather = (wind speed, wind direction
  cos, sin, temperature);
- NO2: a Sentinel-5P-like column field (coarse grid) and a station value driven by the urban share
  and the column; label noise whose std grows with a visible haze (so it is heteroscedastic).
Outputs pass through the published preprocessing (``preprocess_s1`` / ``preprocess_s2``).
"""

import numpy as np

from modelzoo.data.task_data import (
    DFC2020_CLASSES,
    TaskData,
    dfc_labels,
    preprocess_s1,
    preprocess_s2,
    split_task_data,
)

SIGNATURE_SEED = 2020
FUEL_TYPES = ["coal", "lignite", "gas", "peat"]


def _signatures(bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class S2 reflectance [8, bands] and S1 backscatter dB [8, 2], fixed for all data."""
    rng = np.random.default_rng(SIGNATURE_SEED)
    s2 = rng.uniform(500, 6000, size=(len(DFC2020_CLASSES), bands))
    s1 = np.stack([rng.uniform(-22, -5, len(DFC2020_CLASSES)),
                   rng.uniform(-25, -12, len(DFC2020_CLASSES))], 1)
    return s2, s1


def land_cover(rng: np.random.Generator, n: int, size: int, cells: int = 5) -> np.ndarray:
    """Voronoi land-cover maps int64 [n, size, size] with ``cells`` random cells of random classes."""
    yy, xx = np.mgrid[0:size, 0:size]
    centres = rng.uniform(0, size, size=(n, cells, 2))
    classes = rng.integers(0, len(DFC2020_CLASSES), size=(n, cells))
    dist = (yy[None, None] - centres[..., 0, None, None]) ** 2 + \
        (xx[None, None] - centres[..., 1, None, None]) ** 2
    return np.take_along_axis(classes, dist.argmin(1).reshape(n, -1), 1).reshape(n, size, size)


def render(rng: np.random.Generator, lc: np.ndarray, s2_bands: int,
           atmosphere: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Raw S2 reflectance [n, s2_bands, H, W] and S1 dB [n, 2, H, W] of land-cover maps.

    ``atmosphere`` (0..1) adds what radar does not see to S2: a per-sample, per-band haze offset
    (up to 3,000 x atmosphere) and clouds (bright smooth blobs covering up to 60% x atmosphere of
    the patch), so the optical signatures alone are a less reliable read-out of the land cover.
    """
    sig2, sig1 = _signatures(s2_bands)
    n, size = len(lc), lc.shape[-1]
    s2 = sig2[lc].transpose(0, 3, 1, 2) * rng.normal(1.0, 0.08, size=(n, s2_bands, size, size))
    if atmosphere > 0:
        s2 = s2 + rng.uniform(0, 3000 * atmosphere, size=(n, s2_bands, 1, 1))
        yy, xx = np.mgrid[0:size, 0:size] / size
        centre = rng.uniform(0, 1, size=(n, 2, 1, 1))
        radius = rng.uniform(0, 0.45 * atmosphere, size=(n, 1, 1)) + 1e-6
        dist = np.sqrt((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2)
        cloud = np.clip(1.5 - dist / radius, 0, 1)[:, None]  # soft-edged disc
        s2 = s2 * (1 - cloud) + 9000 * cloud
    speckle = 10 * np.log10(rng.gamma(4.0, 0.25, size=(n, 2, size, size)))
    s1 = sig1[lc].transpose(0, 3, 1, 2) + speckle
    return s2, s1


def sen12ms_like(n: int = 600, size: int = 32, seed: int = 0, cells: int = 5,
                 atmosphere: float = 0.0, val_size: float = 0.15,
                 test_size: float = 0.15) -> TaskData:
    """Paired views: s1 [n, 2, H, W], s2 [n, 13, H, W], land_cover int64 [n, H, W], label (majority
    class) int64 [n], multilabel float32 [n, 8] (classes >= 10%)."""
    rng = np.random.default_rng(seed)
    lc = land_cover(rng, n, size, cells)
    s2, s1 = render(rng, lc, 13, atmosphere)
    single, multi = dfc_labels(lc)
    return split_task_data("synthetic_sen12ms",
                           {"s1": preprocess_s1(s1), "s2": preprocess_s2(s2), "land_cover": lc,
                            "label": single, "multilabel": multi},
                           ["s1", "s2"], DFC2020_CLASSES, val_size, test_size, seed=42)


def power_plants(n: int = 600, size: int = 32, seed: int = 0, val_size: float = 0.15,
                 test_size: float = 0.15) -> TaskData:
    """Plants: image [n, 12, H, W], weather float32 [n, 4], plume mask float32 [n, 1, H, W],
    generation (fraction of capacity, [0, 1]) float32 [n], fuel int64 [n] (4 types)."""
    rng = np.random.default_rng(seed)
    lc = land_cover(rng, n, size)
    s2, _ = render(rng, lc, 12)
    generation = rng.uniform(0, 1, n) * (rng.uniform(size=n) > 0.2)  # 20% of plants idle
    fuel = rng.integers(0, len(FUEL_TYPES), n)
    wind = rng.uniform(1, 8, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    temperature = rng.uniform(-5, 30, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.normal(0, 2, n), size / 2 + rng.normal(0, 2, n)
    along = (xx - cx[:, None, None]) * np.cos(angle)[:, None, None] + \
        (yy - cy[:, None, None]) * np.sin(angle)[:, None, None]
    across = -(xx - cx[:, None, None]) * np.sin(angle)[:, None, None] + \
        (yy - cy[:, None, None]) * np.cos(angle)[:, None, None]
    length = 2 + 10 * generation / np.sqrt(wind)  # pixels down-wind
    width = 1.0 + 0.15 * np.clip(along, 0, None)
    plume = np.exp(-0.5 * (across / width) ** 2) * np.exp(-np.clip(along, 0, None) /
                                                          length[:, None, None])
    plume = plume * (along > -1) * (generation[:, None, None] > 0)
    tint = np.random.default_rng(SIGNATURE_SEED + 1).uniform(0.5, 1.5, size=(len(FUEL_TYPES), 12))
    s2 = s2 + 4000 * plume[:, None] * tint[fuel][:, :, None, None] * generation[:, None, None, None]
    mask = (plume * generation[:, None, None] > 0.15).astype(np.float32)[:, None]
    weather = np.stack([wind / 8, np.cos(angle), np.sin(angle), temperature / 30], 1)
    return split_task_data("synthetic_plants",
                           {"image": preprocess_s2(s2), "weather": weather.astype(np.float32),
                            "plume": mask, "generation": generation.astype(np.float32),
                            "fuel": fuel.astype(np.int64)},
                           ["image", "weather"], FUEL_TYPES, val_size, test_size, seed=42)


def no2_fields(n: int = 600, size: int = 32, s5p_size: int = 24, seed: int = 0,
               label_noise: float = 0.3, val_size: float = 0.15, test_size: float = 0.15) -> TaskData:
    """NO2: s2 [n, 12, H, W], s5p [n, 1, s5p_size, s5p_size], no2 float32 [n] (standardised), haze
    float32 [n]. The station value depends on the urban share and the column field; its noise
    std is ``label_noise * (0.2 + 2 * haze)``, and haze brightens the S2 patch (visible)."""
    rng = np.random.default_rng(seed)
    lc = land_cover(rng, n, size)
    s2, _ = render(rng, lc, 12)
    urban = (lc == DFC2020_CLASSES.index("Urban")).mean(axis=(1, 2))
    haze = rng.uniform(0, 1, n)
    s2 = s2 + 3000 * haze[:, None, None, None]
    background = rng.uniform(0.2, 1.0, n)
    yy, xx = np.mgrid[0:s5p_size, 0:s5p_size] / s5p_size
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.05)
    s5p = background[:, None, None] + (urban[:, None, None] * 2) * blob + \
        rng.normal(0, 0.05, size=(n, s5p_size, s5p_size))
    clean = 2.0 * urban + background
    noise = rng.normal(0, 1, n) * label_noise * (0.2 + 2 * haze)
    no2 = clean + noise
    mean, std = no2.mean(), no2.std()
    return split_task_data("synthetic_no2",
                           {"s2": preprocess_s2(s2), "s5p": s5p[:, None].astype(np.float32),
                            "no2": ((no2 - mean) / std).astype(np.float32),
                            "haze": haze.astype(np.float32)},
                           ["s2", "s5p"], [], val_size, test_size, seed=42)
