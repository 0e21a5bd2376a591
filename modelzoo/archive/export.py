"""Export an archive's states as one safetensors file per model (for the Hugging Face Hub)."""

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from modelzoo.archive.manifest import sha256_file, writing
from modelzoo.archive.reader import ArchiveReader

EXPORT_DIR = "safetensors"


def tensor_name(epoch: int, param: str) -> str:
    """Key of one tensor in a model's safetensors file, e.g. ``epoch_003/conv1.weight``."""
    return f"epoch_{epoch:03d}/{param}"


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted. safetensors writes the header
    from hash maps, so the metadata's key order (and with it the file's sha256) changes from one
    process to the next; sorted, the same states always give the same bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)  # the tensor data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def export_safetensors(root: str | Path) -> list[Path]:
    """Write ``root/safetensors/model-XXXXX.safetensors`` for every model and list them.

    Each file holds every stored state (``epoch_EEE/<state_dict key>``) and carries the model's
    config, the zoo name and the stored epochs as JSON strings in its metadata; its header is
    canonical (``canonical_safetensors``), so a re-export gives the same bytes. Checksums go into
    the manifest's ``exports`` so ``zoo validate`` checks them.
    """
    root = Path(root)
    folder = root / EXPORT_DIR
    with writing(root), ArchiveReader(root) as zoo:
        folder.mkdir(exist_ok=True)
        manifest = zoo.manifest
        weights = zoo.weights()
        written, exports = [], []
        for row, model in enumerate(zoo.model_ids):
            tensors: dict[str, np.ndarray] = {}
            for s, epoch in enumerate(zoo.epochs):
                for name, array in zoo.layout.unflatten_numpy(weights[row, s]).items():
                    tensors[tensor_name(epoch, name)] = array
            metadata = {"zoo": zoo.name, "model": str(model), "epochs": json.dumps(zoo.epochs),
                        "architecture": json.dumps({"name": manifest.architecture,
                                                    "kwargs": manifest.architecture_kwargs}),
                        "config": json.dumps(manifest.model_config(model))}
            path = folder / f"model-{model:05d}.safetensors"
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))
            tmp.replace(path)
            written.append(path)
            exports.append({"file": f"{EXPORT_DIR}/{path.name}", "sha256": sha256_file(path)})
        manifest.set_exports(exports)
        manifest.save(root)
    return written


def load_safetensors_state(path: str | Path, epoch: int) -> dict:
    """One epoch's state_dict (torch tensors) from an exported model file."""
    from safetensors import safe_open

    prefix = tensor_name(epoch, "")
    with safe_open(str(path), framework="pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
