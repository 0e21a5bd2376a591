"""The architecture registry: ``register_model`` (class decorator), ``create_model``, ``list_models``."""

from torch import nn

from modelzoo.errors import ZooError

MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str):
    """Class decorator adding an architecture to the registry under ``name``."""

    def wrap(cls):
        MODELS[name] = cls
        return cls

    return wrap


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown names or arguments raise ``ZooError``."""
    if name not in MODELS:
        raise ZooError(f"unknown architecture {name!r}; choose from {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise ZooError(f"architecture {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(MODELS)
