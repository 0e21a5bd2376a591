import pytest
import torch

from modelzoo.errors import ZooError
from modelzoo.models import ACTIVATIONS, INIT_METHODS, count_parameters, create_model


@pytest.mark.parametrize("name,kwargs,count", [
    ("tetris_mlp", {}, 100),
    ("cnn_s", {"in_channels": 1}, 2464),
    ("cnn_s", {"in_channels": 3}, 2864),
    ("cnn_l", {"in_channels": 3}, 10853),
    ("unterthiner_cnn", {"in_channels": 1}, 4970),
    ("resnet18", {"num_classes": 10}, 11_173_962),
])
def test_published_parameter_counts(name, kwargs, count):
    assert count_parameters(create_model(name, **kwargs)) == count


@pytest.mark.parametrize("name,shape", [("tetris_mlp", (2, 1, 4, 4)), ("cnn_s", (2, 1, 28, 28)),
                                        ("cnn_l", (2, 3, 32, 32)),
                                        ("unterthiner_cnn", (2, 1, 28, 28)),
                                        ("resnet18", (2, 3, 32, 32)),
                                        ("resnet18", (2, 3, 64, 64))])
def test_forward_gives_log_probabilities(name, shape):
    out = create_model(name, **({"in_channels": shape[1]} if name != "tetris_mlp" else {}))(
        torch.randn(shape))
    assert torch.allclose(out.exp().sum(-1), torch.ones(2), atol=1e-5)


def test_constructor_arguments_act():
    for act in ACTIVATIONS:
        create_model("cnn_s", activation=act)
    for init in INIT_METHODS:
        model = create_model("cnn_s", init=init, bias_init=0.01)
        assert torch.all(model.conv1.bias == 0.01)
    with pytest.raises(ZooError, match="unknown activation"):
        create_model("cnn_s", activation="swishy")
    with pytest.raises(ZooError, match="unknown architecture"):
        create_model("vgg")
    with pytest.raises(ZooError, match="unexpected keyword"):
        create_model("cnn_s", widht=3)


def test_keyed_dropout_is_a_function_of_the_key():
    model = create_model("cnn_s", dropout=0.5).train()
    x = torch.randn(4, 1, 28, 28)
    key = torch.tensor(1234)
    a, b = model(x, dropout_key=key), model(x, dropout_key=key)
    assert torch.equal(a, b)
    assert not torch.equal(a, model(x, dropout_key=torch.tensor(99)))
    assert not torch.equal(a, model.eval()(x))
