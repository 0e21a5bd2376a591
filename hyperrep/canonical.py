"""Canonical form of a zoo by weight matching: every model permuted to align with one reference.

Hidden units can be reordered without changing a network's function, so two models of a Seed zoo
that learned the same features hold them in unrelated orders. Weight matching (Ainsworth et al.,
"Git Re-Basin") finds, per model, the function-preserving permutation that maximises the inner
product of its weights with a reference model's: coordinate descent over the permutable links, each
step a linear assignment of the link's units on their incoming rows and outgoing columns. After it,
the zoo's weights vary smoothly from model to model, which is what lets an autoencoder reconstruct
them (the 2024 hyper-representations canonicalise first).
"""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from hyperrep.augment import PermutationPlan


def match_to_reference(plan: PermutationPlan, flat: torch.Tensor, reference: torch.Tensor,
                       iterations: int = 10) -> torch.Tensor:
    """Gather indices int64 [N, P] that align each model of ``flat`` [N, P] with ``reference`` [P].

    ``flat[n, index[n]]`` computes the same function as ``flat[n]`` and has at least its inner
    product with the reference (each assignment step can only raise it). A model's result depends
    on its weights alone, not on which other models share the call.
    """
    counts = plan.unit_counts()
    ref = reference[None].double()
    indices = []
    for model in flat.double():
        perms = [torch.arange(units) for units in counts]
        link_order = np.random.default_rng(0)
        for _ in range(iterations):
            changed = False
            for link in link_order.permutation(len(counts)):
                current = model[plan.gather_index(perms)][None]
                similarity = plan.producer_rows(ref, link)[0] @ plan.producer_rows(current, link)[0].T \
                    + plan.consumer_columns(ref, link)[0] @ plan.consumer_columns(current, link)[0].T
                _, columns = linear_sum_assignment(similarity.numpy(), maximize=True)
                if not np.array_equal(columns, np.arange(len(columns))):
                    perms[link] = perms[link][torch.from_numpy(columns)]
                    changed = True
            if not changed:
                break
        indices.append(plan.gather_index(perms))
    return torch.stack(indices) if indices else torch.zeros((0, len(reference)), dtype=torch.int64)


def canonical_reference(plan: PermutationPlan, flat: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """A reference [P] for a set of models [N, P]: start from the first model, then ``rounds`` times
    align all models to the current reference and take their mean (a reference nearer to all)."""
    reference = flat[0]
    for _ in range(rounds):
        index = match_to_reference(plan, flat, reference)
        reference = torch.gather(flat, 1, index).mean(0)
    return reference
