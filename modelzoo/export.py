"""Export an archive's states as one safetensors file per model (for the Hugging Face Hub)."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from modelzoo.archive import sha256_file, write_atomic
from modelzoo.zoo import open_zoo

EXPORT_DIR = "safetensors"


def tensor_name(epoch: int, param: str) -> str:
    """Key of one tensor in a model's safetensors file, e.g. ``epoch_003/conv1.weight``."""
    return f"epoch_{epoch:03d}/{param}"


def export_safetensors(root: str | Path) -> list[Path]:
    """Write ``root/safetensors/model-XXXXX.safetensors`` for every model and list them.

    Each file holds every stored state (``epoch_EEE/<state_dict key>``) and carries the model's
    config, the zoo name and the stored epochs as JSON strings in its metadata. Checksums go into
    the manifest's ``exports`` so ``zoo validate`` checks them.
    """
    root = Path(root)
    zoo = open_zoo(root)
    folder = root / EXPORT_DIR
    folder.mkdir(exist_ok=True)
    weights = zoo.weights()
    written, exports = [], []
    for row, model in enumerate(zoo.model_ids):
        tensors = {}
        for s, epoch in enumerate(zoo.epochs):
            for name, tensor in zoo.layout.unflatten(weights[row, s]).items():
                tensors[tensor_name(epoch, name)] = tensor.contiguous()
        metadata = {"zoo": zoo.name, "model": str(model), "epochs": json.dumps(zoo.epochs),
                    "architecture": json.dumps(zoo.manifest["architecture"]),
                    "config": json.dumps(zoo.manifest["models"][model]["config"])}
        path = folder / f"model-{model:05d}.safetensors"
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
        written.append(path)
        exports.append({"file": f"{EXPORT_DIR}/{path.name}", "sha256": sha256_file(path)})
    manifest = dict(zoo.manifest, exports=exports)
    zoo.close()
    write_atomic(root / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return written


def load_safetensors_state(path: str | Path, epoch: int) -> dict[str, torch.Tensor]:
    """One epoch's state_dict from an exported model file."""
    from safetensors import safe_open

    prefix = tensor_name(epoch, "")
    with safe_open(str(path), framework="pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
