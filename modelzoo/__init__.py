"""modelzoo: generate, store and read populations of trained neural networks (model zoos)."""

from modelzoo.architectures import create_model
from modelzoo.data import create_dataset
from modelzoo.specs import ZooSpec, load_spec
from modelzoo.zoo import Zoo, open_zoo

__version__ = "0.1.0"
__all__ = ["Zoo", "ZooSpec", "create_dataset", "create_model", "load_spec", "open_zoo"]
