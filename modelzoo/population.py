"""Vectorised population training (filled in by issue 3); for now, decide nothing is vectorised."""


def can_vectorise(arch, kwargs, configs) -> bool:
    return False


def train_population_groups(*args, **kwargs):
    raise NotImplementedError
