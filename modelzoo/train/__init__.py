"""Training zoo models. ``train_configs`` is the one entry point every feature calls (generate,
sparsify, sampling, the Ray backend); underneath it:

- ``alone``: one model at a time, ``train_model``: the reference loop of ``single`` (torch.nn +
  torch.optim) on a CPU; on a GPU its step replayed as one CUDA graph (``graphed``);
- ``population`` + ``grouped``: many models trained as one vectorised population;
- ``stream``: a zoo's shards trained in full populations, models queued across shards;
- ``cores``: on a CPU, independent populations trained side by side, each thread with its share
  of the intra-op threads;
- ``tasks`` + ``objectives`` + ``losses``: the remote-sensing task objectives;
- ``record``: the one way every loop records stored states and metrics (``RunRecorder``);
- ``modelzoo.randomness``: the keyed randomness that makes all of them draw the same numbers.
"""

from modelzoo.train.alone import train_model
from modelzoo.train.dispatch import load_data, train_configs
from modelzoo.train.single import build_model

__all__ = ["build_model", "load_data", "train_configs", "train_model"]
