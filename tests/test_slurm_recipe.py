"""The recipe under --cmd_backend slurm: a sharded stage gives the same outputs as on the local backend.

Stage 2 of the shared tiny workdir (built with the local backend, tests/conftest.py) is redone in a
fresh workdir against a real single-node SLURM (``slurm_env``), from the same corpus, with another
number of shards; its data dirs must equal the local ones file by file.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_recipe

SET_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2num_samples")


def test_stage2_under_slurm_gives_the_local_outputs(tiny_recipe_workdir: Path, slurm_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    corpus = tiny_recipe_workdir / "corpus"
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "2", "--stop_stage", "2", "--cmd_backend", "slurm",
                    "--nj", "3", "--mlsuperb_root", str(corpus / "mlsuperb"),
                    "--librispeech_root", str(corpus / "LibriSpeech")], slurm_env)
    assert r.returncode == 0, r.stderr[-3000:]
    local_sets = sorted(p.parent.name for p in (tiny_recipe_workdir / "data").glob("*/.done"))
    assert len(local_sets) == 7
    # one SLURM array of 3 measuring tasks per set, each task's log at its Kaldi path
    assert r.stderr.count("submitted SLURM array job") == len(local_sets)
    assert r.stderr.count("--array=1-3") == len(local_sets)
    for name in local_sets:
        for f in SET_FILES:
            assert (tmp_path / "data" / name / f).read_text() == (tiny_recipe_workdir / "data" / name / f).read_text(), \
                f"data/{name}/{f}"
        assert (tmp_path / "data" / name / ".done").is_file()
        for j in (1, 2, 3):
            assert "# Ended (code 0)" in (tmp_path / f"log/data/measure_{name}.{j}.log").read_text()
