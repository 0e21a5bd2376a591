"""Remote-sensing architectures at their published sizes, their objectives on synthetic data, and the
readers of the published layouts on small files written here in those layouts."""

import csv

import h5py
import numpy as np
import pytest
import tifffile
import torch

from modelzoo.data import create_dataset
from modelzoo.errors import ZooError
from modelzoo.models import count_parameters, create_model
from modelzoo.specs import TaskSpec, TrainingConfig
from modelzoo.train.objectives import DynamicTaskWeighting
from modelzoo.train.tasks import train_task_model

# Published sizes: Dual-SimCLR with ResNet-50 (and ResNet-18) encoders and their 2048-2048-128
# projections; the transformer variant at ViT-S/16 scale; U-Net width 64 / 4 levels; NO2 ResNet-50.
PUBLISHED = [("dual_simclr", {}, 55_961_536),
             ("dual_simclr", {"depth": 18}, 23_037_888),
             ("dual_vit", {}, 44_214_528),
             ("dual_swin", {}, 55_052_532),
             ("dual_swin", {"head": "classification"}, 55_064_828),
             ("dual_swin", {"head": "segmentation"}, 82_774_928),  # + Swin-UNet decoders
             ("multitask_plant", {}, 31_178_758),
             ("no2_net", {}, 24_957_947)]


@pytest.mark.parametrize("name,kwargs,count", PUBLISHED)
def test_published_sizes(name, kwargs, count):
    assert count_parameters(create_model(name, **kwargs)) == count


def test_swin_t_encoder_is_swin_t():
    from modelzoo.models.remote_sensing import SwinEncoder

    # Swin-T has 28,288,354 parameters with its 1000-class ImageNet head (768 x 1000 + 1000)
    assert count_parameters(SwinEncoder(3)) == 28_288_354 - 769_000
    model = create_model("dual_swin")
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 2, 224, 224), torch.randn(1, 13, 224, 224))
    assert out["h1"].shape == (1, 768) and out["h2"].shape == (1, 768)
    model = create_model("dual_swin", head="segmentation")
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 2, 224, 224), torch.randn(1, 13, 224, 224))
    assert out["logits"].shape == (1, 8, 224, 224)


def test_dual_swin_trains_contrastively():
    data = create_dataset("synthetic_sen12ms", options={"n": 150})
    run = train_task_model("dual_swin", {"image_size": 32, "patch": 2, "embed_dim": 16,
                                         "depths": [2, 2], "heads": [1, 2], "window": 4},
                           config(epochs=2, temperature=0.2), data, TaskSpec(name="contrastive"))
    assert run.metrics["test_loss"][-1] < 0.8 * run.metrics["test_loss"][0]


def test_dual_vit_trains_contrastively():
    data = create_dataset("synthetic_sen12ms", options={"n": 150, "size": 16})
    run = train_task_model("dual_vit", {"image_size": 16, "patch": 4, "dim": 16, "depth": 1,
                                        "heads": 2},
                           config(epochs=2, temperature=0.2), data, TaskSpec(name="contrastive"))
    assert run.metrics["test_loss"][-1] < 0.8 * run.metrics["test_loss"][0]


def test_swin_unet_segmentation_learns_land_cover():
    data = create_dataset("synthetic_sen12ms", options={"n": 200, "size": 16})
    run = train_task_model("dual_swin", {"image_size": 16, "patch": 2, "embed_dim": 8,
                                         "depths": [2, 2], "heads": [1, 2], "window": 4,
                                         "head": "segmentation"},
                           config(lr=3e-3, epochs=4), data,
                           TaskSpec(name="supervised", label="segmentation"))
    assert run.metrics["test_miou"][-1] > run.metrics["test_miou"][0] + 0.05


def test_shifted_windows_do_not_attend_across_the_wrapped_border():
    from modelzoo.models.remote_sensing import SwinBlock

    torch.manual_seed(0)
    block = SwinBlock(dim=8, heads=2, window=4, shift=2, resolution=8).eval()
    x = torch.randn(1, 64, 8)

    def changed(source, target):  # does perturbing token `source` move the output at `target`?
        y = x.clone()
        y[0, source[0] * 8 + source[1]] += torch.linspace(-1, 1, 8)  # LayerNorm ignores shifts
        with torch.no_grad():
            diff = block(y) - block(x)
        return diff[0, target[0] * 8 + target[1]].abs().max().item() > 1e-6

    # (6, 6) and (0, 0) share a shifted window only through the roll: masked apart
    assert not changed((0, 0), (6, 6))
    assert changed((7, 7), (6, 6)) and changed((1, 1), (0, 0))


def test_no2_head_is_the_published_one():
    model = create_model("no2_net")
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2176, 544), (544, 2)]
    assert model.s5p_fc.out_features == 128


def config(**kw):
    base = {"epochs": 6, "batch_size": 32, "lr": 1e-3, "activation": "relu",
            "init": "kaiming_uniform", "bias_init": 0.0}
    return TrainingConfig(**{**base, **kw})


def test_contrastive_loss_falls_and_the_probe_beats_the_random_encoder():
    # clouds and haze in S2 only: agreeing with S1 pays for features of the land cover itself
    data = create_dataset("synthetic_sen12ms", options={"n": 600, "cells": 3, "atmosphere": 1.0,
                                                        "val_size": 0.2, "test_size": 0.3})
    gains = []
    for seed in (0, 1, 2):
        run = train_task_model("dual_simclr", {"depth": 10, "width": 8, "proj_dim": 32,
                                               "stem": "small"},
                               config(seed=seed, epochs=12, lr=2e-3, temperature=0.2,
                                      batch_size=64, save_epochs=[0, 12]),
                               data, TaskSpec(name="contrastive"))
        loss, probe = run.metrics["test_loss"], run.metrics["test_probe_acc"]
        assert loss[-1] < 0.7 * loss[0]
        gains.append(probe[-1] - probe[0])  # epoch 0 = the same encoder, random
    # measured: +0.017, +0.156, +0.133 (test probe accuracy; random encoders 0.51-0.57)
    assert min(gains) > -0.01 and np.mean(gains) > 0.05


def test_segmentation_head_learns_land_cover():
    data = create_dataset("synthetic_sen12ms", options={"n": 300})
    run = train_task_model("dual_simclr", {"depth": 10, "width": 4, "head": "segmentation"},
                           config(lr=3e-3), data, TaskSpec(name="supervised", label="segmentation"))
    assert run.metrics["test_miou"][-1] > run.metrics["test_miou"][0] + 0.05
    assert run.metrics["test_loss"][-1] < run.metrics["test_loss"][0]


def test_multi_label_head_learns_the_classes_present():
    data = create_dataset("synthetic_sen12ms", options={"n": 300})
    run = train_task_model("dual_simclr", {"depth": 10, "width": 4, "head": "classification",
                                           "stem": "small"},
                           config(lr=3e-3, epochs=4), data,
                           TaskSpec(name="supervised", label="multi"))
    present = data.test["multilabel"].mean().item()  # share of (sample, class) pairs present
    assert run.metrics["test_acc"][-1] > max(present, 1 - present) + 0.05
    assert run.metrics["test_loss"][-1] < run.metrics["test_loss"][0]


def test_dynamic_weighting_follows_the_kpis():
    weighting = DynamicTaskWeighting(["improving", "flat"], alpha=0.5, gamma=2.0)
    history = []
    for kpi in np.linspace(0.05, 0.95, 10):
        weighting.update({"improving": kpi, "flat": 0.5})
        history.append(weighting.weights())
    improving = [h["improving"] for h in history]
    assert all(a > b for a, b in zip(improving, improving[1:]))  # better KPI, smaller weight
    assert history[0]["improving"] > history[0]["flat"]
    assert history[-1]["improving"] < history[-1]["flat"]
    k = weighting.kpi["improving"]
    assert improving[-1] == pytest.approx(-(1 - k) ** 2 * np.log(k))
    fixed = DynamicTaskWeighting(["a", "b"], fixed={"a": 1.0, "b": 0.3})
    fixed.update({"a": 0.1, "b": 0.9})
    assert fixed.weights() == {"a": 1.0, "b": 0.3}


def test_multitask_training_moves_the_task_weights():
    data = create_dataset("synthetic_plants", options={"n": 300})
    run = train_task_model("multitask_plant", {"width": 4, "levels": 2}, config(lr=3e-3), data,
                           TaskSpec(name="multitask"))
    weights = np.stack([run.metrics[f"weight_{t}"] for t in ("segmentation", "generation",
                                                               "fuel")])
    assert np.ptp(weights[1:, 1:], axis=1).min() > 0.05  # these weights moved with their KPIs
    # plume segmentation (IoU >= 0.5 still rare) is the hardest task and keeps the largest weight
    assert (weights[0, 1:] >= weights[1:, 1:]).all()
    assert run.metrics["test_mae"][-1] < run.metrics["test_mae"][0]
    fixed = train_task_model("multitask_plant", {"width": 4, "levels": 2},
                             config(lr=3e-3, task_weighting="fixed", epochs=1), data,
                             TaskSpec(name="multitask"))
    assert all((fixed.metrics[f"weight_{t}"] == 1.0).all() for t in ("segmentation", "fuel"))


def no2_run(noise: float):
    data = create_dataset("synthetic_no2", options={"n": 600, "label_noise": noise})
    return data, train_task_model("no2_net", {"depth": 10, "width": 4, "s5p_size": 24,
                                              "dropout": 0.2},
                                  config(epochs=8), data, TaskSpec(name="heteroscedastic",
                                                                   mc_passes=20))


def test_predicted_variance_grows_with_label_noise_and_filtering_helps():
    _, quiet = no2_run(0.05)
    data, noisy = no2_run(0.3)
    assert noisy.metrics["test_std"][-1] > 1.5 * quiet.metrics["test_std"][-1]
    # MC-dropout filtering: the 80% most confident test predictions have the smaller error
    assert noisy.metrics["test_mse_filtered"][-1] < noisy.metrics["test_mse"][-1]
    assert noisy.metrics["test_r2"][-1] > 0.2 and quiet.metrics["test_r2"][-1] > 0.8


# -- readers of the published layouts ----------------------------------------------------------

def write_triplet(folder, names, rng, size=16, label_values=(1, 10)):
    s1, s2, lab = names
    for path in names:
        path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(s1, rng.uniform(-30, 2, (2, size, size)).astype(np.float32))
    tifffile.imwrite(s2, rng.integers(0, 12000, (13, size, size)).astype(np.uint16),
                     photometric="minisblack")
    labels = rng.choice(label_values, size=(size, size)).astype(np.uint16)
    tifffile.imwrite(lab, np.stack([labels] * 4) if "_lc_" in lab.name else labels,
                     photometric="minisblack")


def test_sen12ms_reader(tmp_path):
    rng = np.random.default_rng(0)
    for p in range(10):
        names = [tmp_path / "ROIs1158_spring" / f"{k}_1" / f"ROIs1158_spring_{k}_1_p{p}.tif"
                 for k in ("s1", "s2", "lc")]
        write_triplet(tmp_path, names, rng, label_values=(1, 10, 13, 17))
    data = create_dataset("sen12ms", root=tmp_path, options={"patch_size": 8})
    assert len(data.train) + len(data.val) + len(data.test) == 10
    cropped = create_dataset("sen12ms", root=tmp_path, options={"crop": 12, "patch_size": 6})
    assert cropped.train["s2"].shape[1:] == (13, 6, 6)
    assert cropped.train["land_cover"].shape[1:] == (6, 6)
    assert data.train["s1"].shape[1:] == (2, 8, 8) and data.train["s2"].shape[1:] == (13, 8, 8)
    assert 0 <= data.train["s1"].min() and data.train["s2"].max() <= 1.0
    # IGBP 1 -> Forest (0), 10 -> Grassland (2), 13 -> Urban (5), 17 -> Water (7)
    assert set(np.unique(data.train["land_cover"].numpy())) <= {0, 2, 5, 7}


def test_dfc2020_reader_and_missing_file(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("validation", 6), ("test", 3)):
        for p in range(count):
            names = [tmp_path / f"ROIs0000_{split}" / f"{k}_0" / f"ROIs0000_{split}_{k}_0_p{p}.tif"
                     for k in ("s1", "s2", "dfc")]
            write_triplet(tmp_path, names, rng, label_values=(1, 3, 9))
    data = create_dataset("dfc2020", root=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 1, 3)
    lc = data.test["land_cover"].numpy()
    assert set(np.unique(lc)) <= {-1, 0, 6}  # savanna (3) ignored, barren (9) -> 6
    (tmp_path / "ROIs0000_test" / "s2_0" / "ROIs0000_test_s2_0_p1.tif").unlink()
    with pytest.raises(ZooError, match="missing file .*ROIs0000_test_s2_0_p1.tif"):
        create_dataset("dfc2020", root=tmp_path)


def write_labels(path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_power_plant_reader_and_bad_value(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = []
    for i in range(10):
        tifffile.imwrite(tmp_path / "images" / f"plant{i}.tif",
                         rng.integers(0, 10000, (16, 16, 12)).astype(np.uint16))
        tifffile.imwrite(tmp_path / "masks" / f"plant{i}.tif",
                         (rng.uniform(size=(16, 16)) > 0.8).astype(np.uint8))
        rows.append({"image": f"images/plant{i}.tif", "plume": f"masks/plant{i}.tif",
                     "generation": f"{rng.uniform():.3f}", "fuel": ["coal", "gas"][i % 2],
                     "wind_speed": "3.2", "wind_direction": "120", "temperature": "11",
                     "humidity": "0.6"})
    write_labels(tmp_path / "labels.csv", rows)
    data = create_dataset("power_plants", root=tmp_path)
    assert data.classes == ["coal", "gas"]
    assert data.train["image"].shape[1:] == (12, 16, 16)
    assert data.train["weather"].shape[1] == 4 and data.train["plume"].shape[1:] == (1, 16, 16)
    rows[3]["generation"] = "n/a"
    write_labels(tmp_path / "labels.csv", rows)
    with pytest.raises(ZooError, match="row 5, column generation: 'n/a' is not a number"):
        create_dataset("power_plants", root=tmp_path)


def test_no2_reader_npy_and_netcdf(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "sentinel-2").mkdir()
    (tmp_path / "sentinel-5p").mkdir()
    lines = ["station,no2"]
    for i in range(10):
        np.save(tmp_path / "sentinel-2" / f"DE{i:03d}.npy",
                rng.uniform(0, 8000, (24, 24, 12)).astype(np.float32))
        field = rng.uniform(0, 1e-4, (30, 30)).astype(np.float32)
        if i % 2:
            np.save(tmp_path / "sentinel-5p" / f"DE{i:03d}.npy", field)
        else:
            with h5py.File(tmp_path / "sentinel-5p" / f"DE{i:03d}.nc", "w") as f:
                f["tropospheric_NO2_column_number_density"] = field
        lines.append(f"DE{i:03d},{rng.uniform(5, 40):.2f}")
    (tmp_path / "stations.csv").write_text("\n".join(lines) + "\n")
    data = create_dataset("no2", root=tmp_path, options={"patch_size": 12})
    assert data.train["s2"].shape[1:] == (12, 12, 12) and data.train["s5p"].shape[1:] == (1, 30, 30)
    assert abs(float(torch.cat([data.train["no2"], data.val["no2"], data.test["no2"]]).mean())) < 1e-5
    (tmp_path / "sentinel-5p" / "DE004.nc").write_bytes(b"not netcdf")
    with pytest.raises(ZooError, match="DE004.nc: not a readable netCDF-4 file"):
        create_dataset("no2", root=tmp_path)


def test_malformed_geotiff_is_one_clear_error(tmp_path):
    from modelzoo.data.remote_sensing import read_geotiff

    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00garbage")
    with pytest.raises(ZooError, match="broken.tif: not a readable GeoTIFF"):
        read_geotiff(path, 13)
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
    with pytest.raises(ZooError, match="expected 13 bands"):
        read_geotiff(path, 13)


# -- remote-sensing zoos through the CLI -------------------------------------------------------

TINY_ZOOS = {
    "contrastive": {"architecture": {"name": "dual_simclr", "depth": 10, "width": 4,
                                     "proj_dim": 16},
                    "dataset": {"name": "synthetic_sen12ms", "options": {"n": 120, "size": 16}},
                    "factors": {"seed": [1, 2], "temperature": [0.1, 0.5]}},
    "multitask": {"architecture": {"name": "multitask_plant", "width": 2, "levels": 1},
                  "dataset": {"name": "synthetic_plants", "options": {"n": 120, "size": 16}},
                  "factors": {"seed": [1, 2], "task_weighting": ["dynamic", "fixed"]}},
    "heteroscedastic": {"architecture": {"name": "no2_net", "depth": 10, "width": 4,
                                         "s5p_size": 24},
                        "dataset": {"name": "synthetic_no2", "options": {"n": 120, "size": 16}},
                        "factors": {"seed": [1, 2, 3, 4, 5, 6], "dropout": [0.1, 0.5]}},
}


@pytest.mark.parametrize("task", sorted(TINY_ZOOS))
def test_tiny_remote_sensing_zoo_generates_and_validates(task, tmp_path):
    import yaml

    import cli.hyperrep
    import cli.zoo
    from modelzoo import open_zoo
    from tests.conftest import invoke_cli, run_cli

    spec = {"name": f"tiny-{task}", **TINY_ZOOS[task], "task": {"name": task, "mc_passes": 3},
            "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "activation": "relu",
                         "init": "kaiming_uniform", "schedule": "onecycle"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "zoo"
    assert run_cli("cli.zoo", "generate", str(path), "--out", str(out)).returncode == 0
    assert invoke_cli(cli.zoo.app, "validate", str(out)).exit_code == 0  # in this process
    info = invoke_cli(cli.zoo.app, "info", str(out))
    assert info.exit_code == 0 and "per epoch" in info.stdout
    with open_zoo(out) as zoo:
        table = zoo.metadata
        assert zoo.task == task and len(zoo) == len(spec["factors"]["seed"]) * 2
        assert np.isfinite(table[f"test_{zoo.primary_metric}"]).all() and "gap" in table
    if task == "heteroscedastic":  # hyperrep runs on it: no permutation plan needed
        run = tmp_path / "run"
        trained = run_cli("cli.hyperrep", "train", str(out), "--out", str(run), "--epochs", "1",
                          "--config", "hyperrep_configs/remote-sensing.yaml")
        assert trained.returncode == 0, trained.stderr
        probed = run_cli("cli.hyperrep", "probe", str(run), str(out), "--json",
                         str(tmp_path / "probe.json"))
        assert probed.returncode == 0, probed.stderr
        import json

        results = json.loads((tmp_path / "probe.json").read_text())
        assert {"test_r2", "gap", "epoch", "dropout"} <= set(results)
        for refused in (invoke_cli(cli.zoo.app, "sparsify", str(out), "--ratios", "0.5"),
                        invoke_cli(cli.hyperrep.app, "sample", str(run), str(out), "--n", "2",
                                   "--out", str(tmp_path / "samples"))):
            assert refused.exit_code == 2 and "supports classification zoos" in refused.stderr


def test_task_spec_errors_are_one_line(tmp_path):
    from modelzoo.specs import parse_spec

    with pytest.raises(ZooError, match="task data set: set task.name"):
        parse_spec({"name": "x", "architecture": {"name": "no2_net"},
                    "dataset": {"name": "synthetic_no2"}})
    with pytest.raises(ZooError, match="needs a task data set"):
        parse_spec({"name": "x", "architecture": {"name": "cnn_s"}, "dataset": {"name": "digits"},
                    "task": {"name": "contrastive"}})
    with pytest.raises(ZooError, match="options"):
        create_dataset("synthetic_no2", options={"bands": 3})


def test_linear_evaluation_of_a_pretrained_contrastive_zoo(tmp_path):
    from modelzoo import open_zoo
    from modelzoo.generate import generate
    from modelzoo.specs import parse_spec

    encoder = {"depth": 10, "width": 4, "proj_dim": 16, "stem": "small"}
    dataset = {"name": "synthetic_sen12ms", "options": {"n": 200, "size": 16}}
    training = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "activation": "relu",
                "init": "kaiming_uniform"}
    pre = generate(parse_spec({"name": "pre", "architecture": {"name": "dual_simclr", **encoder},
                               "dataset": dataset, "task": {"name": "contrastive"},
                               "training": training, "factors": {"seed": [1, 2]}}),
                   tmp_path / "pre")
    spec = parse_spec({"name": "lin", "dataset": dataset, "training": training,
                       "architecture": {"name": "dual_simclr", **encoder,
                                        "head": "classification"},
                       "task": {"name": "supervised", "label": "single",
                                "pretrained": str(pre), "freeze": True},
                       "factors": {"seed": [5, 6]}})
    out = generate(spec, tmp_path / "lin")
    with open_zoo(pre) as p, open_zoo(out) as z:
        for model in (0, 1):
            source = p.state_dict(model, p.epochs[-1])
            first, last = z.state_dict(model, 0), z.state_dict(model, z.epochs[-1])
            for name, value in source.items():  # encoders (weights and BN statistics) frozen
                assert torch.equal(first[name], value) and torch.equal(last[name], value), name
            assert not torch.equal(first["classifier.weight"], last["classifier.weight"])
        assert z.metadata["test_acc"].notna().all()
    random = generate(parse_spec({**spec.model_dump(mode="json"), "name": "random",
                                  "task": {"name": "supervised", "freeze": True}}),
                      tmp_path / "random")  # frozen random encoders: the baseline
    with open_zoo(random) as z:
        first, last = z.state_dict(0, 0), z.state_dict(0, z.epochs[-1])
        assert torch.equal(first["enc1.conv1.weight"], last["enc1.conv1.weight"])
        assert torch.equal(first["enc2.bn1.running_mean"], last["enc2.bn1.running_mean"])
    missing = parse_spec({**spec.model_dump(mode="json"),
                          "task": {"name": "supervised", "pretrained": str(tmp_path / "nope")}})
    with pytest.raises(ZooError, match="nope is not a zoo archive"):
        generate(missing, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written


SMALL = {"dual_simclr": {"depth": 10, "width": 4, "head": "segmentation", "stem": "small"},
         "dual_vit": {"image_size": 16, "patch": 4, "dim": 16, "depth": 1, "heads": 2,
                      "head": "classification"},
         "dual_swin": {"image_size": 16, "patch": 2, "embed_dim": 8, "depths": [2, 2],
                       "heads": [1, 2], "window": 4, "head": "segmentation"},
         "multitask_plant": {"width": 2, "levels": 2},
         "no2_net": {"depth": 10, "width": 4, "s5p_size": 24}}


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_tokenisation_covers_every_remote_sensing_layer(arch):
    from hyperrep.tokenise import build_token_map, detokenise, tokenise
    from modelzoo.archive.layout import Layout

    layout = Layout.of(create_model(arch, **SMALL[arch]))
    tokens = build_token_map(layout, 32)
    flat = torch.randn(3, layout.size)
    assert torch.equal(detokenise(tokenise(flat, tokens), tokens, layout.size), flat)
    covered = torch.zeros(layout.size, dtype=torch.bool)
    covered[tokens.index[tokens.mask]] = True
    assert covered.all()  # every stored value (weights, biases, norms, BN statistics) is in a token
