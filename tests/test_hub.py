"""``zoo upload`` / ``zoo download`` with the real huggingface_hub client against a loopback Hub."""

import shutil

import numpy as np
import pytest

from modelzoo import open_zoo
from modelzoo.archive import METRICS, ArchiveWriter, ModelRun, validate_archive
from modelzoo.generate import zoo_manifest
from modelzoo.archive.layout import Layout
from modelzoo.models import create_model
from modelzoo.specs import parse_spec
from tests.conftest import run_cli
from tests.hub_server import FakeHub

TOKEN = "hf_loopbackSecretToken123"


@pytest.fixture(scope="module")
def hub(tetris_zoo, tmp_path_factory):
    with FakeHub(TOKEN) as server:
        env = client_env(server, tmp_path_factory.mktemp("hf-upload"))
        for repo in ("tester/tetris", "tester/tetris-copy"):
            result = run_cli("cli.zoo", "upload", str(tetris_zoo), repo, env=env)
            assert result.returncode == 0, result.stderr
            assert TOKEN not in result.stdout + result.stderr
        yield server


def client_env(server: FakeHub, home) -> dict[str, str]:
    return {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}


def archive_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_upload_then_download_is_byte_identical(hub, tetris_zoo, tmp_path):
    out = tmp_path / "zoo"
    env = client_env(hub, tmp_path / "hf")
    result = run_cli("cli.zoo", "download", "tester/tetris", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert "checksums match" in result.stdout and TOKEN not in result.stdout + result.stderr
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "data_files: metadata.csv" in card and "test-tetris" in card
    (out / "README.md").unlink()
    assert archive_bytes(out) == archive_bytes(tetris_zoo)
    assert validate_archive(out) == []
    assert run_cli("cli.zoo", "validate", str(out)).returncode == 0
    written = b"".join(p.read_bytes() for p in (tmp_path).rglob("*") if p.is_file())
    assert TOKEN.encode() not in written  # the token is sent, never stored
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub.requests if r["method"] == "POST")


def big_archive(root):
    """A 12.6 MB one-shard CNN-s archive of random states (larger than the client's 10 MiB download
    chunk, so a broken connection leaves bytes on disk to resume from)."""
    spec = parse_spec({"name": "big", "architecture": {"name": "cnn_s"},
                       "dataset": {"name": "digits"}, "training": {"epochs": 50},
                       "factors": {"seed": {"range": [0, 25]}}})
    layout = Layout.of(create_model("cnn_s"))
    writer = ArchiveWriter.open(root, zoo_manifest(spec, shard_size=25))
    rng = np.random.default_rng(0)
    runs = [ModelRun(rng.normal(size=(51, layout.size)).astype(np.float32),
                     {m: np.full(51, 0.5, np.float32) for m in METRICS}) for _ in range(25)]
    writer.write_shard(0, 25, runs)
    writer.finalize()
    return root


def test_an_interrupted_download_resumes(hub, tmp_path):
    zoo = big_archive(tmp_path / "big")
    env = client_env(hub, tmp_path / "hf")
    assert run_cli("cli.zoo", "upload", str(zoo), "tester/big", env=env).returncode == 0
    hub.drop_once["shards/shard-00000.h5"] = 11 * 2**20
    before = len(hub.requests)
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "download", "tester/big", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    ranges = [r["range"] for r in hub.requests[before:]
              if r["path"].endswith("shard-00000.h5") and r["method"] == "GET"]
    assert ranges == [None, f"bytes={10 * 2**20}-"]  # the second request resumes
    assert (out / "shards/shard-00000.h5").read_bytes() == \
        (zoo / "shards/shard-00000.h5").read_bytes()
    assert validate_archive(out) == []


def test_offline_mode_reads_the_cache(hub, tmp_path):
    env = client_env(hub, tmp_path / "hf")
    assert run_cli("cli.zoo", "download", "tester/tetris", "--out", str(tmp_path / "a"),
                   env=env).returncode == 0
    before = len(hub.requests)
    result = run_cli("cli.zoo", "download", "tester/tetris", "--out", str(tmp_path / "b"),
                     env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert len(hub.requests) == before
    assert validate_archive(tmp_path / "b") == []


def test_include_downloads_a_partial_zoo(hub, tmp_path):
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "download", "tester/tetris", "--out", str(out), "--include",
                     "shards/shard-00000.h5", env=client_env(hub, tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert "partial" in result.stdout
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.h5"]
    assert validate_archive(out) == []
    with open_zoo(out) as zoo:
        assert len(zoo) == 3 and not zoo.complete
        assert zoo.weights().shape[0] == 3


def test_a_tampered_file_fails_the_checksum(hub, tmp_path):
    hub.tamper("tester/tetris-copy", "shards/shard-00002.h5")
    out = tmp_path / "zoo"
    result = run_cli("cli.zoo", "download", "tester/tetris-copy", "--out", str(out),
                     env=client_env(hub, tmp_path / "hf"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "sha256" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists() and not (tmp_path / ".zoo.partial").exists()


def test_bad_uploads_and_unknown_repos_are_one_error_line(hub, tetris_zoo, tmp_path):
    env = client_env(hub, tmp_path / "hf")
    broken = tmp_path / "broken"
    shutil.copytree(tetris_zoo, broken)
    data = bytearray((broken / "shards/shard-00000.h5").read_bytes())
    data[-10] ^= 0xFF
    (broken / "shards/shard-00000.h5").write_bytes(data)
    for args in (["upload", str(broken), "tester/broken"],
                 ["download", "tester/nope", "--out", str(tmp_path / "x")],
                 ["upload", str(tetris_zoo), "tester/tetris"]):
        wrong = {**env, "HF_TOKEN": "hf_wrong"} if args[-1] == "tester/tetris" else env
        result = run_cli("cli.zoo", *args, env=wrong)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
        assert TOKEN not in result.stderr and "hf_wrong" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_upload_to_a_private_repo_on_a_branch(tetris_zoo, tmp_path):
    with FakeHub(TOKEN) as hub:  # its own Hub: the module's has a blob tampered with on purpose
        env = client_env(hub, tmp_path / "hf")
        result = run_cli("cli.zoo", "upload", str(tetris_zoo), "tester/tetris-private",
                         "--private", "--revision", "experiment", env=env)
        assert result.returncode == 0, result.stderr
        created = hub.created[-1]
        assert created["visibility"] == "private" and created["name"] == "tetris-private"
        repo = hub.repos["tester/tetris-private"]
        assert repo["branches"]["experiment"] != repo["branches"]["main"]  # on the branch only
        out = tmp_path / "zoo"
        got = run_cli("cli.zoo", "download", "tester/tetris-private", "--revision", "experiment",
                      "--out", str(out), env=env)
        assert got.returncode == 0, got.stderr
        (out / "README.md").unlink()
        assert archive_bytes(out) == archive_bytes(tetris_zoo)
        main = run_cli("cli.zoo", "download", "tester/tetris-private", "--out",
                       str(tmp_path / "m"), env=env)
        assert main.returncode == 2 and main.stderr.count("\n") == 1  # main holds no zoo
