"""Zoo architectures behind one registry: ``create_model(name, **kwargs)``, ``list_models()``.

Each family module registers its classes with ``@register_model``; importing this package imports
every family. Classification models subclass ``ZooModel``, remote-sensing task models ``TaskModel``
(contracts in ``modelzoo.models.base``).
"""

# importing a family module registers its architectures
from modelzoo.models import remote_sensing, resnet, small  # noqa: F401
from modelzoo.models.base import ACTIVATIONS, INIT_METHODS, TaskModel, ZooModel, ZooModule
from modelzoo.models.registry import (MODELS, count_parameters, create_model, list_models,
                                      register_model)

__all__ = ["ACTIVATIONS", "INIT_METHODS", "MODELS", "TaskModel", "ZooModel", "ZooModule",
           "count_parameters", "create_model", "list_models", "register_model"]
