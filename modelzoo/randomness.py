"""Counter-based randomness keyed by a model's seed.

Every random draw during training (data order, dropout masks) is a pure function of the model's seed
and a counter (epoch, step, layer), never of a shared generator. So a model draws the same numbers
whether it is trained alone or inside a vectorised population of any size or composition.
The hash works on int64 tensors holding 32-bit values, so it also runs under ``torch.func.vmap``.
"""

import torch

_MASK32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer avalanche hash applied elementwise to an int64 tensor of values < 2**32."""
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK32
    return x ^ (x >> 16)


def derive_key(key: torch.Tensor, counter: "int | torch.Tensor") -> torch.Tensor:
    """A new key from ``key`` (int64 tensor, any shape) and an integer counter (or int64 tensor)."""
    return mix32((mix32(key & _MASK32) + (counter * 0x9E3779B1 & _MASK32)) & _MASK32)


def keyed_uniform(key: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1) of ``shape``, a pure function of the 0-d int64 ``key``."""
    numel = 1
    for s in shape:
        numel *= int(s)
    index = torch.arange(numel, dtype=torch.int64, device=key.device).reshape(tuple(shape))
    bits = mix32((index + mix32(key & _MASK32)) & _MASK32)
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


def seed_key(seed: int) -> int:
    """The root key (a Python int < 2**32) of a model with the given seed."""
    return int(mix32(torch.tensor(seed & _MASK32, dtype=torch.int64)))


def permutation(seed: int, counter: int, n: int) -> torch.Tensor:
    """A permutation of ``range(n)`` determined by (seed, counter); int64 tensor of shape [n]."""
    generator = torch.Generator().manual_seed((seed_key(seed) << 20) + counter)
    return torch.randperm(n, generator=generator)
