"""modelzoo: generate, store and read populations of trained neural networks (model zoos).

The names below are imported on first use, so ``import modelzoo.archive`` (reading, validating,
sharing archives) does not pay for torch.
"""

import importlib

__version__ = "0.1.0"
_EXPORTS = {"Zoo": "modelzoo.zoo", "open_zoo": "modelzoo.zoo", "ZooSpec": "modelzoo.specs",
            "load_spec": "modelzoo.specs", "create_dataset": "modelzoo.data",
            "create_model": "modelzoo.models", "list_models": "modelzoo.models"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelzoo' has no attribute {name!r}")
