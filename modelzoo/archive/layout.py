"""Flat weight vectors: the layout mapping a model's state_dict to one float32 vector and back.

The layout lists every floating-point state_dict entry (parameters and BatchNorm running statistics,
not integer counters) with its name, shape, offset and kind, in state_dict order.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from modelzoo.errors import ZooError

if TYPE_CHECKING:  # torch is imported where tensors are made: reading an archive does not need it
    import torch
    from torch import nn


@dataclass(frozen=True)
class Entry:
    """One tensor in the flat vector: ``vector[offset:offset + size].reshape(shape)``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    size: int
    kind: str  # "param" or "buffer"


class Layout:
    """The flat-vector layout of one architecture."""

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self.size = sum(e.size for e in entries)

    @classmethod
    def of(cls, model: "nn.Module") -> "Layout":
        params = {name for name, _ in model.named_parameters()}
        entries, offset = [], 0
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            size = tensor.numel()
            kind = "param" if name in params else "buffer"
            entries.append(Entry(name, tuple(tensor.shape), offset, size, kind))
            offset += size
        return cls(entries)

    def to_json(self) -> list[dict]:
        return [asdict(e) | {"shape": list(e.shape)} for e in self.entries]

    @classmethod
    def from_json(cls, items: list[dict]) -> "Layout":
        return cls([Entry(i["name"], tuple(i["shape"]), i["offset"], i["size"], i["kind"])
                    for i in items])

    def flatten(self, state: "dict[str, torch.Tensor]") -> np.ndarray:
        """state_dict -> float32 vector [size]."""
        return np.concatenate([state[e.name].detach().cpu().reshape(-1).float().numpy()
                               for e in self.entries]).astype(np.float32, copy=False)

    def unflatten(self, vector: "np.ndarray | torch.Tensor") -> "dict[str, torch.Tensor]":
        """float32 vector [size] -> state_dict of the layout's entries (copies)."""
        import torch

        vector = torch.as_tensor(np.asarray(vector, dtype=np.float32))
        return {e.name: vector[e.offset:e.offset + e.size].reshape(e.shape).clone()
                for e in self.entries}

    def load_into(self, model: "nn.Module", vector: "np.ndarray | torch.Tensor") -> "nn.Module":
        """Load a flat state [size] into ``model`` (strictly: every floating-point tensor of the
        model must be in the layout and every entry in the model, else one ``ZooError`` naming
        the key); integer buffers (BatchNorm's batch counters) keep the model's values."""
        own = model.state_dict()
        floating = {name for name, tensor in own.items() if tensor.is_floating_point()}
        names = [e.name for e in self.entries]
        missing = [n for n in own if n in floating and n not in names]
        unexpected = [n for n in names if n not in floating]
        if missing or unexpected:
            what = f"{missing[0]} is missing from the stored state" if missing else \
                f"the stored state's {unexpected[0]} is not in the model"
            raise ZooError(f"state does not fit {type(model).__name__}: {what}")
        state = self.unflatten(vector)
        model.load_state_dict({n: state.get(n, t) for n, t in own.items()}, strict=True)
        return model

    def unflatten_numpy(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """float32 vector [size] -> {name: float32 array of the entry's shape} (copies)."""
        vector = np.asarray(vector, dtype=np.float32)
        return {e.name: vector[e.offset:e.offset + e.size].reshape(e.shape).copy()
                for e in self.entries}

    def param_entries(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "param"]
