"""Data sets that need no download: procedurally generated Tetris and scikit-learn's digits."""

import numpy as np
import torch

from modelzoo.data.registry import RawData, Split, register_dataset, split_off

# Tetromino classes on a 4x4 grid; each is drawn in every rotation.
TETROMINOES = {
    "I": ["XXXX"],
    "O": ["XX", "XX"],
    "T": ["XXX", ".X."],
    "S": [".XX", "XX."],
}
TETRIS_SIZE = 3000
TETRIS_NOISE = 0.1
TETRIS_SEED = 7
# 15% of the whole for validation, cut from the 85% left after the test split: 70/15/15.
VAL_OF_REST = 0.15 / 0.85


def _shape_variants(rows: list[str]) -> list[np.ndarray]:
    base = np.array([[c == "X" for c in row] for row in rows], dtype=np.float32)
    variants: list[np.ndarray] = []
    for k in range(4):
        rotated = np.rot90(base, k)
        if not any(np.array_equal(rotated, v) for v in variants):
            variants.append(rotated)
    return variants


def tetris_images(n: int, noise: float = TETRIS_NOISE, seed: int = TETRIS_SEED):
    """``n`` Tetris images: float32 [n, 1, 4, 4] in about [0, 1], labels int64 [n] in 0..3.

    Each image holds one tetromino (I, O, T or S; label = its index) in a uniformly random rotation,
    shifted to a uniformly random position inside the 4x4 grid, plus Gaussian pixel noise (std 0.1).
    """
    rng = np.random.default_rng(seed)
    variants = [_shape_variants(rows) for rows in TETROMINOES.values()]
    images = np.zeros((n, 4, 4), dtype=np.float32)
    labels = rng.integers(0, len(variants), size=n)
    for i, label in enumerate(labels):
        shape = variants[label][rng.integers(len(variants[label]))]
        h, w = shape.shape
        top, left = rng.integers(0, 5 - h), rng.integers(0, 5 - w)
        images[i, top:top + h, left:left + w] = shape
    images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


@register_dataset("tetris", val_size=VAL_OF_REST, source="generated offline (see DATASET_CARD.md)",
                  needs_root=False)
def read_tetris() -> RawData:
    """3,000 generated 4x4 Tetris images, split 70/15/15 (seeded)."""
    x, y = tetris_images(TETRIS_SIZE)
    rest, test = split_off(Split(x, y), 0.15, seed=TETRIS_SEED)
    return RawData(train=rest, test=test, classes=list(TETROMINOES))


@register_dataset("digits", val_size=VAL_OF_REST, source="scikit-learn's bundled copy of the UCI digits",
                  needs_root=False, resize=28)
def read_digits() -> RawData:
    """scikit-learn's 1,797 8x8 digits (scaled to [0, 1], resized to 28x28), split 70/15/15."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    rest, test = split_off(Split(x, y), 0.15, seed=42)
    return RawData(train=rest, test=test, classes=[str(d) for d in range(10)])

