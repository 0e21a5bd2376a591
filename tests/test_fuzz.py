"""Hostile and broken input, fuzzed with hypothesis: every broken spec, manifest and shard is
refused with exit code 1 or 2 and one line naming the problem (never a traceback), nothing
outside the archive is read through a manifest path, and reading never changes the archive.

Case counts (``max_examples``) are what BENCHMARKS.md's reliability section reports."""

import hashlib
import json
import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.zoo import app
from modelzoo.errors import ZooError
from modelzoo.specs import load_spec, parse_spec
from tests.conftest import invoke_cli, tetris_spec


def fuzz(cases: int) -> settings:
    return settings(max_examples=cases, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


ODD_VALUES = st.sampled_from([None, -1, 0, 2**63, 1e308, float("nan"), "", "x", [], {}, [1, 2],
                              {"a": 1}, True, "../../etc/passwd"])
ESCAPES = st.sampled_from(["../outside.h5", "/etc/hostname", "shards/../../outside.h5",
                           "shards/..", "~/x.h5", "shards\\..\\..\\x.h5", "", "link/shard.h5"])


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def run(*args: str):
    return invoke_cli(app, *args)


def check_refused(copy: Path, must_fail: bool = True) -> None:
    """validate says what is wrong (exit 1 with 'invalid:' lines, or 2 with one 'error:' line);
    info either reads what is there or stops with one line; neither changes a byte."""
    before = digest(copy)
    validate = run("validate", str(copy))
    if must_fail:
        assert validate.exit_code in (1, 2), validate.output
    if validate.exit_code == 1:
        assert all(line.startswith("invalid: ") for line in validate.stdout.strip().splitlines())
    assert run("info", str(copy)).exit_code in (0, 2)
    assert digest(copy) == before


def paths(data, prefix=()):
    """Every (key path) in a JSON document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield prefix + (key,)
            yield from paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data[:3]):
            yield prefix + (i,)
            yield from paths(value, prefix + (i,))


def fresh_copy(tetris_zoo: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(tetris_zoo, copy)
    return copy


@fuzz(400)
@given(data=st.data())
def test_mutated_manifests_are_refused_with_one_line(tetris_zoo, tmp_path, data):
    copy = fresh_copy(tetris_zoo, tmp_path, "m")
    manifest = json.loads((copy / "manifest.json").read_text())
    key = data.draw(st.sampled_from(list(paths(manifest))), label="key")
    holder = manifest
    for part in key[:-1]:
        holder = holder[part]
    action = data.draw(st.sampled_from(["delete", "replace"]), label="action")
    if action == "delete" and isinstance(holder, dict):
        del holder[key[-1]]
    else:
        holder[key[-1]] = data.draw(ODD_VALUES, label="value")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    # every mutation: no traceback, one line, no byte changed; a required key removed: refused
    required = key[0] not in ("spec", "fingerprint", "name", "description", "task",
                              "primary_metric", "unrecorded_metrics", "source")
    check_refused(copy, must_fail=action == "delete" and len(key) == 1 and required)


@fuzz(60)
@given(escape=ESCAPES, which=st.sampled_from(["shards", "exports"]))
def test_manifest_paths_never_leave_the_archive(tetris_zoo, tmp_path, escape, which):
    copy = fresh_copy(tetris_zoo, tmp_path, "p")
    outside = tmp_path / "outside.h5"
    shutil.copy(copy / "shards" / "shard-00000.h5", outside)  # a valid shard, outside
    (copy / "link").unlink(missing_ok=True)
    (copy / "link").symlink_to(tmp_path)  # a symlink that leads out
    manifest = json.loads((copy / "manifest.json").read_text())
    if which == "shards":
        manifest["shards"][0]["file"] = escape
    else:
        manifest["exports"] = [{"file": escape, "sha256": "0" * 64}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("validate", str(copy))
    assert result.exit_code in (1, 2)
    assert run("info", str(copy)).exit_code == 2


@fuzz(150)
@given(cut=st.floats(0, 1, exclude_max=True), flip=st.booleans(), shard=st.integers(0, 3))
def test_truncated_or_flipped_shards_are_caught(tetris_zoo, tmp_path, cut, flip, shard):
    copy = fresh_copy(tetris_zoo, tmp_path, "s")
    files = sorted((copy / "shards").glob("*.h5"))
    path = files[shard % len(files)]
    raw = bytearray(path.read_bytes())
    position = int(cut * len(raw))
    if flip:
        raw[position] ^= 0xFF
    else:
        raw = raw[:position]
    path.write_bytes(bytes(raw))
    check_refused(copy)


@fuzz(80)
@given(text=st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.text(max_size=200)))
def test_garbage_manifest_text_is_one_error_line(tetris_zoo, tmp_path, text):
    copy = fresh_copy(tetris_zoo, tmp_path, "g")
    (copy / "manifest.json").write_text(text, encoding="latin-1", errors="replace")
    check_refused(copy)


@fuzz(400)
@given(data=st.data())
def test_mutated_specs_validate_or_give_one_error(data):
    spec = tetris_spec()
    key = data.draw(st.sampled_from(list(paths(spec))), label="key")
    holder = spec
    for part in key[:-1]:
        holder = holder[part]
    if data.draw(st.booleans(), label="delete") and isinstance(holder, dict):
        del holder[key[-1]]
    else:
        holder[key[-1]] = data.draw(ODD_VALUES, label="value")
    try:
        parsed = parse_spec(spec)
    except ZooError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("spec")
    else:
        assert parsed.configs()  # a spec that validates expands into models


@fuzz(100)
@given(text=st.text(max_size=300))
def test_garbage_spec_files_give_one_error(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    try:
        load_spec(path)
    except ZooError as exc:
        assert "\n" not in str(exc)


def test_a_huge_declared_size_is_refused_without_allocating(tetris_zoo, tmp_path):
    copy = fresh_copy(tetris_zoo, tmp_path, "h")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["n_params"] = 10**15
    (copy / "manifest.json").write_text(json.dumps(manifest))
    check_refused(copy)
    spec = yaml.safe_dump(tetris_spec(factors={"seed": {"range": [0, 10**12]}}))
    (tmp_path / "huge.yaml").write_text(spec)
    result = run("generate", str(tmp_path / "huge.yaml"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
