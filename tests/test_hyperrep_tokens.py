"""Tokenisation is exactly invertible and permutations keep the network's function."""

import pytest
import torch

from hyperrep.augment import PermutationPlan
from hyperrep.tokenise import build_token_map, detokenise, tokenise
from modelzoo.archive.layout import Layout
from modelzoo.models import create_model

ARCHS = [("tetris_mlp", {}, (5, 1, 4, 4)), ("cnn_s", {"in_channels": 1}, (5, 1, 28, 28)),
         ("cnn_l", {"in_channels": 3}, (5, 3, 32, 32)),
         ("unterthiner_cnn", {"in_channels": 1}, (5, 1, 28, 28))]


@pytest.mark.parametrize("arch,kwargs,_shape", ARCHS + [("resnet18", {}, None)])
@pytest.mark.parametrize("token_size", [None, 64])
def test_tokenise_detokenise_are_exact_inverses(arch, kwargs, _shape, token_size):
    layout = Layout.of(create_model(arch, **kwargs))
    tokens = build_token_map(layout, token_size)
    flat = torch.randn(2, layout.size)
    assert torch.equal(detokenise(tokenise(flat, tokens), tokens, layout.size), flat)
    assert tokens.mask.sum() == layout.size  # every value in exactly one token slot


def test_published_token_counts():
    counts = {"tetris_mlp": 9, "cnn_s": 48, "unterthiner_cnn": 58}
    for arch, n in counts.items():
        assert build_token_map(Layout.of(create_model(arch))).n_tokens == n


@pytest.mark.parametrize("arch,kwargs,shape", ARCHS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_permuted_network_computes_the_same_function(arch, kwargs, shape, activation):
    torch.manual_seed(0)
    model = create_model(arch, activation=activation, **kwargs).eval()
    layout = Layout.of(model)
    flat = torch.from_numpy(layout.flatten(model.state_dict()))[None]
    perms = PermutationPlan(arch, layout).sample(3, torch.Generator().manual_seed(1))
    x = torch.randn(shape)
    reference = model(x)
    for index in perms:
        permuted = create_model(arch, activation=activation, **kwargs).eval()
        permuted.load_state_dict(layout.unflatten(flat[0, index]))
        assert not torch.equal(flat[0, index], flat[0])
        assert torch.allclose(permuted(x), reference, atol=1e-5)


def test_permuted_resnet18_computes_the_same_function():
    """Residual streams permuted stage by stage, BatchNorm parameters and statistics along."""
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm state, so a BN left behind would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    layout = Layout.of(model)
    flat = torch.from_numpy(layout.flatten(model.state_dict()))
    plan = PermutationPlan("resnet18", layout)
    assert len(plan.unit_counts()) == 12  # 8 blocks + 4 residual streams
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        for index in plan.sample(2, torch.Generator().manual_seed(1)):
            permuted = create_model("resnet18", num_classes=10).eval()
            permuted.load_state_dict(layout.unflatten(flat[index]), strict=False)
            assert not torch.equal(flat[index], flat)
            assert torch.allclose(permuted(x), reference, atol=1e-5)


def test_views_draw_the_permutation_on_the_host_and_noise_and_erasing_where_the_tokens_are():
    """``make_views``: the permutation comes from the host generator; noise and erasing from the
    device generator (on a GPU, the views are built there); one generator on the CPU."""
    from hyperrep.config import TrainConfig
    from hyperrep.data import make_views

    layout = Layout.of(create_model("cnn_s", in_channels=1))
    tokens = build_token_map(layout)
    flat = torch.randn(6, layout.size)
    perms = PermutationPlan("cnn_s", layout).sample(4, torch.Generator().manual_seed(0))
    plain = TrainConfig(noise=0.0, erase_p=0.0)

    def view(cfg, host_seed, device_seed):
        return make_views(flat, tokens, perms, cfg, torch.Generator().manual_seed(host_seed),
                          torch.Generator().manual_seed(device_seed))

    assert torch.equal(view(plain, 1, 1), view(plain, 1, 2))  # the permutation: host only
    assert not torch.equal(view(plain, 1, 1), view(plain, 3, 1))
    noisy = TrainConfig(noise=0.1, erase_p=1.0)
    assert torch.equal(view(noisy, 1, 1), view(noisy, 1, 1))
    assert not torch.equal(view(noisy, 1, 1), view(noisy, 1, 2))
