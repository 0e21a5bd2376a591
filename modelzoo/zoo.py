"""Reading a zoo with its models: ``open_zoo(path)`` -> ``Zoo``, the archive reader plus the zoo's
spec, per-model training configs, ready ``nn.Module`` models and a torch ``Dataset`` of weights."""

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from modelzoo.archive import ArchiveReader
from modelzoo.specs import TrainingConfig, ZooSpec, parse_spec
from modelzoo.train import build_model


class Zoo(ArchiveReader):
    """A zoo archive: models (global indices 0..n-1) x stored epochs of flat weights and metrics
    (``ArchiveReader``), with the spec, configs and models to make them runnable."""

    @cached_property
    def spec(self) -> ZooSpec:
        return parse_spec(self.manifest.spec, f"{self.root}/manifest.json spec")

    def config(self, model: int) -> TrainingConfig:
        return TrainingConfig.model_validate(self.manifest.model_config(model))

    def state_dict(self, model: int, epoch: int) -> dict[str, torch.Tensor]:
        return self.layout.unflatten(self.flat(model, epoch))

    def model(self, model: int, epoch: int) -> torch.nn.Module:
        """The stored model as a ready ``nn.Module`` in eval mode."""
        net = build_model(self.manifest.architecture, self.manifest.architecture_kwargs,
                          self.config(model))
        return self.layout.load_into(net, self.flat(model, epoch)).eval()

    def dataset(self, split: str = "train", epochs: list[int] | None = None,
                properties: tuple[str, ...] = ("test_acc", "gap", "epoch"), seed: int = 0):
        """A torch ``Dataset`` of (flat weights [params], properties [k]) for one model split."""
        return WeightsDataset(self, self.split_models(seed)[split], epochs, properties)


class WeightsDataset(torch.utils.data.Dataset):
    """(weights float32 [params], properties float32 [k]) for chosen models x chosen epochs."""

    def __init__(self, zoo: Zoo, models: np.ndarray, epochs: list[int] | None,
                 properties: tuple[str, ...]):
        epochs = zoo.epochs if epochs is None else list(epochs)
        rows = np.searchsorted(zoo.model_ids, models)
        self.weights = torch.from_numpy(zoo.weights(epochs)[rows].reshape(-1, zoo.n_params))
        table = zoo.metadata.set_index(["model", "epoch"], drop=False)
        keys = [(int(m), e) for m in models for e in epochs]
        self.properties = torch.tensor(table.loc[keys, list(properties)].to_numpy(np.float32))
        self.models = torch.tensor([k[0] for k in keys])
        self.property_names = list(properties)

    def __len__(self) -> int:
        return len(self.weights)

    def __getitem__(self, i: int):
        return self.weights[i], self.properties[i]


def open_zoo(path: str | Path) -> Zoo:
    """Open an archive directory written by ``zoo generate``."""
    return Zoo(path)
