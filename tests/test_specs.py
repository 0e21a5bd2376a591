from pathlib import Path

import pytest

import cli.zoo
from modelzoo.errors import ZooError
from modelzoo.specs import load_spec, parse_spec
from tests.conftest import ROOT, invoke_cli, run_cli, tetris_spec

PUBLISHED_SIZES = {"mnist-seed": 1000, "mnist-hyp-fix": 2560, "mnist-hyp-rand": 2560,
                   "fmnist-hyp-fix": 2560, "svhn-hyp-fix": 4320, "usps-hyp-fix": 2560,
                   "cifar10-cnn-s-hyp-fix": 1280, "cifar10-cnn-l-hyp-fix": 1280,
                   "stl10-cnn-s-hyp-fix": 2560, "stl10-cnn-l-hyp-rand": 2560,
                   "resnet18-cifar10-seed": 1000, "tetris-seed": 1000}


@pytest.mark.parametrize("name,size", PUBLISHED_SIZES.items())
def test_published_specs_have_published_sizes(name, size):
    assert len(load_spec(ROOT / "zoo_specs" / f"{name}.yaml").configs()) == size


def test_every_shipped_spec_is_valid():
    for path in sorted((ROOT / "zoo_specs").glob("*.yaml")):
        assert load_spec(path).configs()


def test_factors_cross_product_and_random_seeds():
    spec = parse_spec(tetris_spec(factors={"seed": {"range": [1, 4]}, "lr": [0.1, 0.01]}))
    configs = spec.configs()
    assert [(c.seed, c.lr) for c in configs] == [(1, 0.1), (1, 0.01), (2, 0.1), (2, 0.01),
                                                 (3, 0.1), (3, 0.01)]
    seeds = [c.seed for c in parse_spec(tetris_spec(factors={"seed": {"random": 5}})).configs()]
    assert len(set(seeds)) == 5
    assert seeds == [c.seed for c in parse_spec(tetris_spec(factors={"seed": {"random": 5}}))
                     .configs()]


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"training": {"epochs": 2, "lrate": 1}}, "training.lrate: unknown key"),
    ({"training": {"optimizer": "rmsprop"}}, "training.optimizer"),
    ({"factors": {"activation": ["tanh", "swish"]}}, "unknown activation 'swish'"),
    ({"factors": {"colour": [1]}}, "unknown factor 'colour'"),
    ({"dataset": {"name": "imagenet"}}, "unknown dataset 'imagenet'"),
    ({"architecture": {"name": "vgg"}}, "unknown architecture 'vgg'"),
])
def test_bad_specs_name_the_key(change, message):
    with pytest.raises(ZooError, match=message):
        parse_spec(tetris_spec(**change))


def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\narchitecture: {name: cnn_s}\ndataset: {name: digits}\n"
                    "training: {epochs: 1, lr: -1}\n")
    result = run_cli("cli.zoo", "generate", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.lr" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()

    spec.write_text("name: x\n  bad: [indent\n")  # in this process: no second start-up
    result = invoke_cli(cli.zoo.app, "generate", str(spec), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not valid YAML" in result.stderr


def test_cli_missing_data_folder_is_exit_2(tmp_path):
    spec = tmp_path / "mnist.yaml"
    spec.write_text(Path(ROOT / "zoo_specs" / "mnist-seed.yaml").read_text())
    result = run_cli("cli.zoo", "generate", str(spec), "--out", str(tmp_path / "out"),
                     "--data-root", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_factor_order_is_part_of_the_zoo_identity():
    a = parse_spec(tetris_spec(factors={"seed": [1, 2], "activation": ["tanh", "relu"]}))
    b = parse_spec(tetris_spec(factors={"activation": ["tanh", "relu"], "seed": [1, 2]}))
    assert [c.seed for c in a.configs()] != [c.seed for c in b.configs()]
    assert a.fingerprint() != b.fingerprint()
