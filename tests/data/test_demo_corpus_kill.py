"""A real SIGKILL during corpus synthesis: no half-written file, and the rerun gives the same corpus.

One tiny plan (conf/corpus/tiny.yaml) is copied into two corpus dirs: one is synthesised without
interruption, the other by a ``make_demo_corpus synth`` process that is SIGKILLed mid-run and then
rerun. Both are finalized and compared file by file, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from espnet2_ext.data import demo_corpus as dc
from espnet2_ext.utils.fileio import DataError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "conf" / "corpus" / "tiny.yaml"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _audio(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".wav", ".flac") and not p.name.startswith(".")]


def _synth_cli(out: Path) -> list[str]:
    return [sys.executable, "-m", "espnet2_ext.bin.make_demo_corpus", "synth", "--out_dir", str(out),
            "--shard", "1", "--nshard", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan")
    dc.make_plan(dc.load_config(TINY), out)
    return out


def test_sigkill_during_synthesis_then_rerun_gives_the_same_corpus(
    planned: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for d in (ref, killed):
        shutil.copytree(planned / dc.PLAN_DIR, d / dc.PLAN_DIR)
    total = len(dc.read_plan(ref))
    dc.synth_shard(ref, 1, 1)
    dc.finalize(ref)

    proc = subprocess.Popen(_synth_cli(killed), env=cli_env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(_audio(killed)) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the synth job finished before it could be killed"
    written = _audio(killed)
    assert 0 < len(written) < total
    ref_files = _tree(ref)
    for p in written:  # what exists under a final name is complete: the same bytes as the reference
        assert p.read_bytes() == ref_files[p.relative_to(killed).as_posix()], p
    with pytest.raises(DataError, match=f"{total - len(written)} of {total} planned audio files are missing"):
        dc.finalize(killed)
    assert not (killed / dc.DONE_FILE).exists()

    # a kill in the middle of a write leaves the temporary file of atomic_open; plant one for sure
    victim = next(p for p in (killed / "mlsuperb").rglob("*.wav"))
    (victim.parent / f".{victim.stem}_x.wav.abcd1234.tmp").write_bytes(b"RIFF half a file")
    rerun = subprocess.run(_synth_cli(killed), env=cli_env, cwd=REPO, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(written)} already done, {total - len(written)} to synthesise" in rerun.stderr
    dc.finalize(killed)
    assert _tree(killed) == ref_files
