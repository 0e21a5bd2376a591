"""Data sets behind one registry: ``create_dataset(name, root=None, **options)``.

An image-classification data set comes back as ``DataSplits``: train / val / test tensors, images
float32 [N, C, H, W] normalised per channel with the train split's mean and std, labels int64 [N].
A remote-sensing task data set (registered with ``task_data=True``) comes back as ``TaskData``
(``modelzoo.data.task_data``): named inputs and targets per split, which its task objective reads.
Importing this package imports every reader module, which registers its data sets.
"""

from modelzoo.data import offline, readers, remote_sensing  # noqa: F401  (registers the readers)
from modelzoo.data.registry import DATASETS, DataSplits, Split, create_dataset
from modelzoo.data.task_data import TaskData

__all__ = ["DATASETS", "DataSplits", "Split", "TaskData", "create_dataset"]
