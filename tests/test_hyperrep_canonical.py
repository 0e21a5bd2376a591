"""Weight matching: a permuted copy is matched back exactly, and the result keeps the function."""

import torch

from hyperrep.augment import PermutationPlan
from hyperrep.canonical import canonical_reference, match_to_reference
from modelzoo.archive.layout import Layout
from modelzoo.models import create_model


def _cnn_states(n: int) -> tuple[PermutationPlan, Layout, torch.Tensor]:
    layout = Layout.of(create_model("cnn_s", in_channels=1))
    states = []
    for seed in range(n):
        torch.manual_seed(seed)
        states.append(torch.from_numpy(layout.flatten(create_model("cnn_s").state_dict())))
    return PermutationPlan("cnn_s", layout), layout, torch.stack(states)


def test_a_permuted_copy_is_matched_back_to_its_original():
    plan, _, states = _cnn_states(1)
    perms = plan.sample(4, torch.Generator().manual_seed(0))
    permuted = torch.stack([states[0, index] for index in perms])
    index = match_to_reference(plan, permuted, states[0])
    for row in range(4):
        assert torch.equal(torch.gather(permuted[row], 0, index[row]), states[0])


def test_matching_keeps_the_function_and_raises_similarity():
    plan, layout, states = _cnn_states(4)
    reference = canonical_reference(plan, states, rounds=2)
    index = match_to_reference(plan, states, reference)
    aligned = torch.gather(states, 1, index)
    x = torch.randn(3, 1, 28, 28)
    for before, after in zip(states, aligned):
        nets = [create_model("cnn_s").eval() for _ in range(2)]
        nets[0].load_state_dict(layout.unflatten(before.numpy()))
        nets[1].load_state_dict(layout.unflatten(after.numpy()))
        assert torch.allclose(nets[0](x), nets[1](x), atol=1e-5)
        assert after @ reference >= before @ reference - 1e-4
    # a model's match does not depend on the other models in the call
    assert torch.equal(match_to_reference(plan, states[2:3], reference)[0], index[2])
