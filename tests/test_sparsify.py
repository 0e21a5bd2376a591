"""Sparsified twins: masks as torch.nn.utils.prune makes them, fine-tuning that holds the mask (in a
population as alone), and ``zoo sparsify`` storing twins that ``open_zoo`` reads."""

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

import cli.zoo
from modelzoo import open_zoo
from modelzoo.archive import validate_archive
from modelzoo.archive.layout import Layout
from modelzoo.train import load_data, train_configs
from modelzoo.models import create_model
from modelzoo.archive.twins import prunable, sparsity
from modelzoo.sparsify import magnitude_masks
from tests.conftest import invoke_cli, run_cli


def _torch_masks(model, ratio: float, scope: str) -> np.ndarray:
    targets = [(m, "weight") for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ratio)
    else:
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=ratio)
    layout = Layout.of(create_model("cnn_s"))
    state = {e.name: torch.ones(e.shape) for e in layout.entries}
    for module_name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            state[f"{module_name}.weight"] = module.weight_mask
    return layout.flatten(state).astype(bool)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_masks_are_torch_prune_masks(scope):
    torch.manual_seed(0)
    model = create_model("cnn_s")
    layout = Layout.of(model)
    flat = layout.flatten(model.state_dict())
    for ratio in (0.5, 0.9):
        ours = magnitude_masks(flat, layout, ratio, scope)[0]
        reference = _torch_masks(_copy(model), ratio, scope)
        assert np.array_equal(ours, reference)
        achieved = 1 - ours[prunable(layout)].mean()
        assert abs(achieved - ratio) < 0.01


def _copy(model):
    clone = create_model("cnn_s")
    clone.load_state_dict(model.state_dict())
    return clone


def test_masked_finetuning_holds_the_mask_in_a_population_as_alone(tetris_zoo):
    with open_zoo(tetris_zoo) as zoo:
        spec, data = zoo.spec, load_data(zoo.spec)
        models = [0, 1, 2]
        dense = np.stack([zoo.flat(m, zoo.epochs[-1]) for m in models])
        masks = magnitude_masks(dense, zoo.layout, 0.6)
        configs = [zoo.config(m).model_copy(update={"epochs": 2, "save_epochs": None})
                   for m in models]
    pop = train_configs(spec, configs, data, initial=dense * masks, masks=masks)
    alone = train_configs(spec, configs, data, population_size=1, initial=dense * masks,
                          masks=masks)
    for p, a, mask in zip(pop, alone, masks):
        assert np.all(p.states[:, ~mask] == 0) and np.all(a.states[:, ~mask] == 0)
        assert np.abs(p.states - a.states).max() < 1e-5
        assert not np.array_equal(p.states[-1], p.states[0])
    assert np.allclose(sparsity(pop[0].states[-1], zoo.layout), 0.6, atol=0.01)


def test_twins_fine_tune_in_populations_across_shards(tetris_zoo, tmp_path, monkeypatch):
    """The twins' fine-tuning queues each group's models across shards (2 populations of 4
    instead of 6 shard-by-shard ones for this 8-model, 3-shard, 2-activation zoo), and stores
    what fine-tuning shard by shard gives, bit for bit."""
    import shutil

    import modelzoo.train.stream
    from modelzoo.sparsify import TWIN_SEED_OFFSET, sparsify

    root = tmp_path / "zoo"
    shutil.copytree(tetris_zoo, root)
    calls = []
    monkeypatch.setattr(modelzoo.train.stream, "train_configs", lambda spec, configs, *a, **kw:
                        calls.append(len(configs)) or train_configs(spec, configs, *a, **kw))
    sparsify(root, "magnitude", [0.5], finetune_epochs=1, population_size=4)
    assert calls == [4, 4]
    with open_zoo(root) as zoo:
        twin = zoo.twin("magnitude-global-0.5").weights()
        data = load_data(zoo.spec)
        for start, stop in ((0, 3), (3, 6), (6, 8)):
            dense = np.stack([zoo.flat(m, zoo.epochs[-1]) for m in range(start, stop)])
            masks = magnitude_masks(dense, zoo.layout, 0.5)
            configs = [zoo.config(m).model_copy(update={
                "epochs": 1, "save_epochs": None, "seed": TWIN_SEED_OFFSET + zoo.config(m).seed})
                for m in range(start, stop)]
            runs = train_configs(zoo.spec, configs, data, "cpu", 4, dense * masks, masks)
            for m, run in zip(range(start, stop), runs):
                assert np.array_equal(twin[m], run.states), m


def test_cli_sparsify_stores_twins_beside_the_zoo(tetris_zoo, tmp_path):
    import shutil

    root = tmp_path / "zoo"
    shutil.copytree(tetris_zoo, root)
    result = run_cli("cli.zoo", "sparsify", str(root), "--ratios", "0.5,0.7",
                     "--finetune-epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "magnitude-global-0.7" in result.stdout and "corr. with dense" in result.stdout
    assert validate_archive(root) == []
    with open_zoo(root) as zoo:
        assert zoo.twin_names == ["magnitude-global-0.5", "magnitude-global-0.7"]
        twin = zoo.twin("magnitude-global-0.7")
        weights, masks = twin.weights(), twin.masks()
        assert weights.shape == (len(zoo), 2, zoo.n_params) and masks.shape == (len(zoo), zoo.n_params)
        assert np.all(weights[np.broadcast_to(~masks[:, None], weights.shape)] == 0)
        assert np.allclose(twin.sparsity(), 0.7, atol=0.01)
        assert set(twin.metadata.columns) >= {"model", "epoch", "sparsity", "test_acc"}
        dense = zoo.flat(3, zoo.epochs[-1])
        assert np.array_equal(weights[3, 0], dense * masks[3])  # state 0 = pruned, not tuned
    before = (root / "manifest.json").read_text()
    again = invoke_cli(cli.zoo.app, "sparsify", str(root), "--ratios", "0.5,0.7",
                       "--finetune-epochs", "1")  # in this process, as the rest below
    assert again.exit_code == 0 and (root / "manifest.json").read_text() == before  # resumed
    structured = invoke_cli(cli.zoo.app, "sparsify", str(root), "--method", "structured",
                            "--ratios", "0.4", "--scope", "layer")
    assert structured.exit_code == 0, structured.output
    with open_zoo(root) as zoo:
        twin = zoo.twin("structured-layer-0.4")
        hidden = twin.weights()[:, 0, :80].reshape(len(zoo), 5, 16)  # fc1.weight [5, 16]
        assert np.all((np.abs(hidden).sum(2) == 0).sum(1) == 2)  # 2 of 5 hidden neurons removed
    assert validate_archive(root) == []
    bad = run_cli("cli.zoo", "sparsify", str(root), "--ratios", "1.5")  # a real process
    assert bad.returncode == 2 and bad.stderr.startswith("error:"), bad.stderr
    for args in (["--method", "random"], ["--from-epoch", "99"],
                 ["--ratios", "0.5", "--finetune-epochs", "3"]):
        assert invoke_cli(cli.zoo.app, "sparsify", str(root), *args).exit_code == 2, args


def test_variational_dropout_zeroes_weights_whose_log_alpha_passes_the_threshold(tetris_zoo):
    from modelzoo.sparsify import variational_dropout_twin

    with open_zoo(tetris_zoo) as zoo:
        data = load_data(zoo.spec)
        config = zoo.config(0).model_copy(update={"lr": 0.05})
        start = zoo.flat(0, zoo.epochs[-1])
        run, keep = variational_dropout_twin(zoo.manifest.architecture,
                                             zoo.manifest.architecture_kwargs, config, data, start, 20)
        layout = zoo.layout
    assert run.states.shape == (21, layout.size) and np.array_equal(run.states[0], start)
    assert np.all(run.states[-1][~keep] == 0) and np.all(run.states[-1][keep] != 0)
    achieved = sparsity(run.states, layout)
    assert achieved[0] == 0 and achieved[-1] > 0.2  # the KL term drives weights out
    assert achieved[-1] > achieved[1]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_structured_masks_compute_what_the_physically_pruned_model_computes(activation):
    import torch_pruning as tp

    from modelzoo.sparsify import structured_masks

    torch.manual_seed(1)
    model = create_model("cnn_s", activation=activation).eval()
    layout = Layout.of(model)
    flat = layout.flatten(model.state_dict())
    masks = structured_masks(flat, layout, "cnn_s", {"activation": activation}, (1, 28, 28), 0.5)[0]
    masked = create_model("cnn_s", activation=activation).eval()
    masked.load_state_dict(layout.unflatten(flat * masks))
    conv1 = (flat * masks)[:200].reshape(8, 25)  # conv1.weight [8, 1, 5, 5]
    assert (np.abs(conv1).sum(1) == 0).sum() == 4  # half of conv1's channels removed whole
    pruned = _copy_with(model, activation)
    classifier = pruned.fc2
    tp.pruner.MagnitudePruner(pruned, torch.zeros(1, 1, 28, 28),
                              importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                              ignored_layers=[classifier]).step()
    x = torch.randn(5, 1, 28, 28)
    assert sum(p.numel() for p in pruned.parameters()) < layout.size
    assert torch.allclose(masked(x), pruned(x), atol=1e-5)


def _copy_with(model, activation):
    clone = create_model("cnn_s", activation=activation).eval()
    clone.load_state_dict(model.state_dict())
    return clone
