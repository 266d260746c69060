"""Step 2 (stages 9-10) is reproducible: the same seed trains the same model, also after a SIGKILL and resume.

Copies of tests/step2_fake.py's fake unit dump (one unit system, BPE-dropout on the source, 2 epochs
of conf/step2/tiny.yaml). ``a`` is trained and decoded without interruption: the shared run that
test_step2.py checks (``step2_fake_run``, tests/conftest.py). ``b`` is too, but starts
with ``a``'s ``checkpoint.pth`` cut in half, as a kill while ESPnet writes it (in place) leaves it:
stage 9 sets it aside and trains anew, so ``b`` is both the second uninterrupted run of the seed
and the cut-checkpoint case. A third copy is SIGKILLed (run.sh and every job it started,
tests/sigkill.py) once epoch 1 is saved, then stage 9 is rerun, which resumes ESPnet from
``checkpoint.pth``.

Model files are compared byte for byte (tensor by tensor first, for a readable failure);
ESPnet's ``checkpoint.pth`` is not compared: its reporter state holds wall times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.recipe import REPO_ROOT, SharedRun
from tests.sigkill import kill_when, start
from tests.step2_fake import STEP2_ARGS, SYSTEM, TEST_SETS, write_fake_workdir

MODEL = "valid.acc.ave.pth"


def recipe(wd: Path, stage: int, stop_stage: int) -> list[str]:
    return [str(REPO_ROOT / "run.sh"), "--config", "conf/recipe/tiny.yaml", "--workdir", str(wd),
            "--stage", str(stage), "--stop_stage", str(stop_stage), *STEP2_ARGS]  # fmt: skip


def run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    proc = start(cmd, env, REPO_ROOT, log)
    assert proc.wait(timeout=1200) == 0, log.read_text()[-4000:]
    return log.read_text()


def exp(wd: Path) -> Path:
    return wd / "exp" / f"step2_{SYSTEM}"


def assert_same_model(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} of {len(sa)} tensors differ between {a} and {b} (first: {different[0]})"
    assert a.read_bytes() == b.read_bytes()


def cut_checkpoint(ref: Path) -> bytes:
    """The first half of ``ref``'s step-2 ``checkpoint.pth``."""
    whole = (exp(ref) / "checkpoint.pth").read_bytes()
    return whole[: len(whole) // 2]


@pytest.fixture(scope="module")
def trained(step2_fake_run: SharedRun, cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path]:
    """Workdirs ``a`` (the shared run) and ``b`` trained (stage 9) and decoded (stage 10), seed 0.

    ``b`` starts with ``a``'s checkpoint cut in half.
    """
    a, b = step2_fake_run.workdir, tmp_path_factory.mktemp("step2_seed") / "b"
    write_fake_workdir(b)
    exp(b).mkdir(parents=True)
    (exp(b) / "checkpoint.pth").write_bytes(cut_checkpoint(a))
    run(recipe(b, 9, 10), cli_env, b.parent / "b.log")
    return a, b


def test_same_seed_gives_the_same_model_and_the_same_hypotheses(trained: tuple[Path, Path]) -> None:
    a, b = trained
    assert_same_model(exp(a) / MODEL, exp(b) / MODEL)
    for set_name in TEST_SETS:
        hyp_a, hyp_b = ((exp(wd) / "decode" / set_name / "text").read_text(encoding="utf-8") for wd in (a, b))
        assert hyp_a.strip() and hyp_a == hyp_b, set_name


def test_bpe_dropout_follows_the_seed(trained: tuple[Path, Path]) -> None:
    """The source segmentations of training are drawn from ESPnet's seeded ``random``, not from the OS."""
    import argparse
    import random

    import yaml

    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask

    a, _ = trained
    args = argparse.Namespace(**yaml.safe_load((exp(a) / "config.yaml").read_text(encoding="utf-8")))
    preprocess = DiscreteASRTask.build_preprocess_fn(args, train=True)
    src = max((line.split(maxsplit=1)[1] for line in (a / f"dump/units/{SYSTEM}/train/text").open()), key=len)

    def draws(seed: int) -> list[tuple[int, ...]]:
        random.seed(seed)
        return [tuple(preprocess("u", {"src_text": src.strip(), "text": "a"})["src_text"]) for _ in range(30)]

    assert draws(0) == draws(0), "the same seed gives the same BPE-dropout samples"
    assert len(set(draws(0))) > 1 and draws(0) != draws(1)


def test_sigkill_during_training_then_rerun_resumes_to_the_same_model(
    trained: tuple[Path, Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    ref, wd = trained[0], tmp_path / "killed"
    write_fake_workdir(wd)
    # killed in epoch 2 of 2: ESPnet writes checkpoint.pth, then 1epoch.pth, after epoch 1
    kill_when(start(recipe(wd, 9, 9), cli_env, REPO_ROOT, tmp_path / "killed.log"),
              lambda: (exp(wd) / "1epoch.pth").exists())  # fmt: skip
    assert not (exp(wd) / ".done").exists() and not (exp(wd) / MODEL).exists(), "no final model after the kill"
    assert (exp(wd) / "checkpoint.pth").is_file()

    run(recipe(wd, 9, 9), cli_env, tmp_path / "rerun.log")
    train_log = (wd / f"log/step2/{SYSTEM}/train.log").read_text(encoding="utf-8")
    assert "The training was resumed using" in train_log and "1epoch results" not in train_log.split("resumed")[1]
    assert (exp(wd) / ".done").is_file()
    assert_same_model(exp(ref) / MODEL, exp(wd) / MODEL)


def test_a_checkpoint_cut_short_is_set_aside_and_training_restarts_to_the_same_model(
    trained: tuple[Path, Path],
) -> None:
    """A kill while ESPnet writes checkpoint.pth (in place) leaves a truncated archive: the rerun trains anew."""
    ref, wd = trained
    train_log = (wd / f"log/step2/{SYSTEM}/train.log").read_text(encoding="utf-8")
    assert "is not a complete checkpoint" in train_log and "The training was resumed" not in train_log
    assert (exp(wd) / "checkpoint.pth.unreadable").read_bytes() == cut_checkpoint(ref)
    assert_same_model(exp(ref) / MODEL, exp(wd) / MODEL)


def test_only_an_unreadable_checkpoint_is_set_aside(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from espnet2_ext.tasks.common import set_aside_unreadable_checkpoint

    assert set_aside_unreadable_checkpoint(tmp_path) is None, "no checkpoint: nothing to do"
    whole = (exp(trained[0]) / "checkpoint.pth").read_bytes()
    (tmp_path / "checkpoint.pth").write_bytes(whole)
    assert set_aside_unreadable_checkpoint(tmp_path) is None and (tmp_path / "checkpoint.pth").is_file()
    (tmp_path / "checkpoint.pth").write_bytes(whole[:-100])
    assert set_aside_unreadable_checkpoint(tmp_path) == tmp_path / "checkpoint.pth.unreadable"
    assert not (tmp_path / "checkpoint.pth").exists()
