"""A real SIGKILL during stages 7 (k-means) and 8 (unit dumping): nothing half-written looks complete, reruns converge.

A minimal workdir (three tiny data dirs and stage 3's ``exp/ssl/upstream.json`` of a 3-state SSL
model) runs ``run.sh --stage 7 --stop_stage 8`` once without interruption: the reference. Each test
copies the workdir, starts the stage, SIGKILLs ``run.sh`` and every job it started as soon as the
stage's first output exists (tests/sigkill.py), checks what the kill left, reruns the stage and
compares the final outputs with the reference: byte for byte, except the fit's wall time in
``unit_model.json`` and the workdir in the training paths that ``bpe.model`` records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from espnet2_ext.utils.workdir_diff import sentencepiece_without_workdir
from tests.recipe import REPO_ROOT
from tests.sigkill import kill_when, start
from tests.tokenizer.conftest import write_data_dir

SYSTEM = "baseline"
UNITS_CONFIG = """k: 8
portion: 1.0
niter: 10
seed: 0
max_points_per_centroid: 256
bpe_vocab_size: 14
systems:
  baseline: {upstream: ssl, features: single}
"""


def recipe(wd: Path, cfg: Path, stage: int) -> list[str]:
    """``run.sh`` for one stage of the minimal workdir."""
    return [str(REPO_ROOT / "run.sh"), "--config", "conf/recipe/tiny.yaml", "--workdir", str(wd), "--stage", str(stage),
            "--stop_stage", str(stage), "--units_config", str(cfg), "--unit_systems", SYSTEM, "--nj", "2",
            "--train_set", "train", "--valid_set", "dev", "--test_sets", "test"]  # fmt: skip


def run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    proc = start(cmd, env, REPO_ROOT, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return log.read_text()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def visible(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files a stage or a user reads: no hidden temporary files."""
    return {k: v for k, v in files.items() if not any(part.startswith(".") for part in k.split("/"))}


def without_timing(unit_model_json: bytes) -> dict:
    """unit_model.json less the fit's wall time, the one value two identical fits do not share."""
    info = json.loads(unit_model_json)
    del info["kmeans"]["fit_seconds"]
    return info


@pytest.fixture(scope="module")
def base(tiny_upstream_info: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workdir before stage 7, units config)."""
    root = tmp_path_factory.mktemp("units_kill")
    wd = root / "base"
    for i, name in enumerate(["train", "dev", "test"]):
        data = write_data_dir(wd / "data" / name, 12 if name == "train" else 6, seed=i)
        (data / "text").write_text("".join(f"{line.split()[0]} a b\n" for line in (data / "wav.scp").open()))
    (wd / "exp/ssl").mkdir(parents=True)
    (wd / "exp/ssl/upstream.json").write_text(json.dumps(tiny_upstream_info))
    cfg = root / "units.yaml"
    cfg.write_text(UNITS_CONFIG)
    return wd, cfg


@pytest.fixture(scope="module")
def reference(base: tuple[Path, Path], cli_env: dict[str, str]) -> Path:
    """The base workdir after stages 7 and 8 without interruption."""
    wd, cfg = base
    ref = wd.parent / "ref"
    shutil.copytree(wd, ref)
    for stage in (7, 8):
        run(recipe(ref, cfg, stage), cli_env, wd.parent / f"ref.{stage}.log")
    return ref


def test_sigkill_during_kmeans_then_rerun_gives_the_same_unit_model(
    base: tuple[Path, Path], reference: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    wd, cfg = base
    killed = tmp_path / "wd"
    shutil.copytree(wd, killed)
    exp, ref_exp = killed / "exp/kmeans" / SYSTEM, reference / "exp/kmeans" / SYSTEM
    # killed while the learn job saves the unit model (its first output)
    kill_when(start(recipe(killed, cfg, 7), cli_env, REPO_ROOT, tmp_path / "killed.log"),
              lambda: (exp / "centroids.npy").exists())  # fmt: skip
    assert not (exp / ".done").exists()
    left, ref_files = visible(tree(exp)), tree(ref_exp)
    for name, data in left.items():  # what a kill leaves under a final name is complete
        if name == "unit_model.json":
            assert without_timing(data) == without_timing(ref_files[name])
        elif not name.startswith("feats/"):  # the reference removed its feature dump once learned
            assert data == ref_files[name], name

    # a kill in the middle of a write leaves atomic_open's temporary file; plant one for sure
    (exp / ".centroids.npy.abcd1234.tmp").write_bytes(b"\x93NUMPY half an array")
    log = run(recipe(killed, cfg, 7), cli_env, tmp_path / "rerun.log")
    assert "feature shard 1 already dumped" in (killed / "log/kmeans" / SYSTEM / "feats.1.log").read_text(), log
    final = tree(exp)
    assert final.keys() == ref_files.keys()
    assert without_timing(final.pop("unit_model.json")) == without_timing(ref_files.pop("unit_model.json"))
    assert final == ref_files, "centroids.npy, km_8.mdl, feature_spec.json and .done byte for byte"


def test_sigkill_during_unit_dumping_then_rerun_gives_the_same_units(
    base: tuple[Path, Path], reference: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _, cfg = base
    killed = tmp_path / "wd"
    shutil.copytree(reference, killed, ignore=shutil.ignore_patterns("units", "log"))  # stage 7 done, 8 not
    out, ref_out = killed / "dump/units" / SYSTEM, reference / "dump/units" / SYSTEM
    kill_when(start(recipe(killed, cfg, 8), cli_env, REPO_ROOT, tmp_path / "killed.log"),
              lambda: any(out.glob("*/split/units.*")))  # fmt: skip
    assert not (out / ".done").exists()
    left, ref_files = visible(tree(out)), tree(ref_out)
    assert left, "the first unit shard was written before the kill"
    for name, data in left.items():
        assert data == ref_files[name], f"{name} looks complete after the kill but differs from the reference"

    (out / "test/split").mkdir(parents=True, exist_ok=True)
    (out / "test/split/.units.2.abcd1234.tmp").write_text("utt00 1 2")
    run(recipe(killed, cfg, 8), cli_env, tmp_path / "rerun.log")
    final = tree(out)
    assert final.keys() == ref_files.keys()
    bpe = "src_bpe/bpe.model"
    assert sentencepiece_without_workdir(final.pop(bpe), killed) == \
        sentencepiece_without_workdir(ref_files.pop(bpe), reference), "bpe.model, but for the workdir in its paths"
    assert final == ref_files, "units, unit strings, BPE tokens and token list, statistics byte for byte"
