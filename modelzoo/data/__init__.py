"""Image data sets behind one registry: ``create_dataset(name, root=None, **options)``.

Every data set comes back as ``DataSplits``: train / val / test tensors, images float32
[N, C, H, W] normalised per channel with the train split's mean and std, labels int64 [N].
"""

from modelzoo.data.registry import DATASETS, DataSplits, Split, create_dataset

__all__ = ["DATASETS", "DataSplits", "Split", "create_dataset"]
