"""Stage 4 (step 0) on the tiny recipe: fine-tune, check convergence, export, record; and its configs.

The shared tiny workdir (stages 1-3, tests/conftest.py) runs ``./run.sh --stage 4`` as a user would;
the tests read its outputs. The last test makes the stage fail on purpose (it edits the workdir).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from espnet2_ext.bin import step0
from espnet2_ext.ssl import SSLUpstream, UpstreamSpec, checkpoint_sha256
from espnet2_ext.ssl.export import load_step0_upstream
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.configs import learning_rates
from tests.recipe import run_recipe

STEP0_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "conf" / "step0").glob("*.yaml"))


@pytest.fixture(scope="module")
def workdir(repo_root: Path, cli_env: dict[str, str], tiny_recipe_workdir: Path) -> Path:
    # stages 1-3 come from the shared tiny workdir; only this module reads or edits exp/step0
    r = run_recipe(["--workdir", str(tiny_recipe_workdir), "--stage", "4", "--stop_stage", "4"], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    return tiny_recipe_workdir


def fake_ssl_stage(wd: Path) -> dict:
    """A workdir whose stage 3 is done (the record is all stage 4 reads before training)."""
    info = {"upstream": {"name": "xls_r_300m", "path": None, "cache_dir": "/c"}, "sha256": "0" * 64}
    (wd / "exp/ssl").mkdir(parents=True)
    (wd / "exp/ssl/upstream.json").write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("config", STEP0_CONFIGS, ids=lambda p: p.name)
def test_step0_configs_are_ctc_on_a_trainable_upstream_and_build(config: Path) -> None:
    from espnet2_ext.tasks.asr import ASRTask

    args = ASRTask.get_parser().parse_args(["--config", str(config)])  # unknown keys are an error
    assert args.frontend == "ssl" and args.frontend_conf["freeze_upstream"] is False
    assert args.frontend_conf["layer_selection"] == "last"
    assert (args.encoder, args.decoder, args.normalize) == (None, None, None)
    assert args.model_conf["ctc_weight"] == 1.0
    rates = learning_rates(args, 40000)  # the rate at every update of the longest schedule
    assert max(rates) == pytest.approx(args.optim_conf["lr"]), "the warm-up reaches the configured rate"
    assert rates[0] < 0.2 * args.optim_conf["lr"], "and starts well below it"
    if args.scheduler == "tristagelr" and args.num_iters_per_epoch:
        assert args.scheduler_conf["max_steps"] == args.max_epoch * args.num_iters_per_epoch


# ------------------------------------------------------------------ helpers
def test_check_set_spreads_a_subset_over_the_set(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    data.mkdir()
    ids = [f"utt{i:02d}" for i in range(10)]
    for name, value in (("wav.scp", "/a/{}.wav"), ("text", "T {}"), ("utt2lang", "eng")):
        (data / name).write_text("".join(f"{u} {value.format(u)}\n" for u in ids))
    out = tmp_path / "check"
    assert step0.main(["check_set", "--data_dir", str(data), "--max_utts", "4", "--out_dir", str(out)]) == 0
    assert list(read_kaldi_text(out / "text")) == ["utt00", "utt02", "utt05", "utt07"]
    assert list(read_kaldi_text(out / "utt2lang")) == list(read_kaldi_text(out / "wav.scp")) == ["utt00", "utt02",
                                                                                               "utt05", "utt07"]
    assert step0.select_utterances(ids, 0) == ids == step0.select_utterances(ids, 50)


def test_dev_cer_below_the_threshold_passes_and_above_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for label, errors in (("first", 100), ("final", 30)):
        scores = {"sets": {"dev": {"n_utts": 5, "ref_chars": 100, "sub": errors, "del": 0, "ins": 0, "errors": errors}}}
        (tmp_path / f"{label}.json").write_text(json.dumps(scores))
    common = ["dev_cer", "--exp_dir", str(tmp_path), "--set", "dev", "--first", str(tmp_path / "first.json"),
              "--final", str(tmp_path / "final.json"), "--out", str(tmp_path / "dev_cer.json")]
    assert step0.main(common + ["--max_cer", "0.95"]) == 0
    result = json.loads((tmp_path / "dev_cer.json").read_text())
    assert (result["first_epoch"]["cer"], result["final"]["cer"], result["converged"]) == (1.0, 0.3, True)
    assert step0.main(common + ["--max_cer", "0.3"]) == 1
    assert "CER on dev is 0.300 (after epoch 1: 1.000), not below 0.3" in capsys.readouterr().err
    assert json.loads((tmp_path / "dev_cer.json").read_text())["converged"] is False


# ------------------------------------------------------------------ the stage without training
def test_step0_off_copies_the_ssl_record(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    info = fake_ssl_stage(tmp_path)
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "4", "--stop_stage", "4", "--step0_config", ""],
               cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 0 is off" in r.stderr
    assert json.loads((tmp_path / "exp/step0/upstream.json").read_text()) == info
    assert (tmp_path / "exp/step0/.done").is_file()


def test_a_directory_of_another_run_is_not_reused(repo_root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    fake_ssl_stage(tmp_path)
    (tmp_path / "exp/step0").mkdir()
    (tmp_path / "exp/step0/tag").write_text("other_run\n")
    r = run_recipe(["--workdir", str(tmp_path), "--stage", "4", "--stop_stage", "4"], cli_env)
    assert r.returncode == 2
    assert "holds the step-0 run 'other_run', not 'tiny'" in r.stderr


# ------------------------------------------------------------------ the tiny recipe's stage 4
def test_token_list_is_espnets_char_list(workdir: Path) -> None:
    tokens = (workdir / "data/token_list/char/tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and "<space>" in tokens
    assert len(tokens) == len(set(tokens))
    chars = {c for text in read_kaldi_text(workdir / "data/train/text").values() for c in text if c != " "}
    assert chars == set(tokens) - {"<blank>", "<unk>", "<space>", "<sos/eos>"}


def test_upstream_json_points_to_the_exported_fine_tuned_model(workdir: Path) -> None:
    exp = workdir / "exp/step0"
    info = json.loads((exp / "upstream.json").read_text())
    ssl = json.loads((workdir / "exp/ssl/upstream.json").read_text())
    assert info["upstream"] == {"name": ssl["upstream"]["name"], "path": str(exp / "upstream"), "cache_dir": None}
    assert info["sha256"] == checkpoint_sha256(exp / "upstream") != ssl["sha256"]
    for key in ("num_hidden_states", "hidden_size", "downsample_rate", "frame_rate_hz"):
        assert info[key] == ssl[key], key
    # the export holds exactly the weights of the model stage 4 checked (the n-best average)
    exported = SSLUpstream(UpstreamSpec.from_dict(info["upstream"]))
    tuned = load_step0_upstream(exp / "valid.loss.ave.pth", UpstreamSpec.from_dict(ssl["upstream"]))
    wavs, lens = torch.randn(2, 12000, generator=torch.Generator().manual_seed(0)), torch.tensor([12000, 7000])
    for a, b in zip(exported(wavs, lens)[0], tuned(wavs, lens)[0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["frontend_conf"]["upstream"] == ssl["upstream"], "trained on stage 3's upstream"


def test_dev_cer_has_before_and_after_and_the_loss_went_down(workdir: Path) -> None:
    result = json.loads((workdir / "exp/step0/dev_cer.json").read_text())
    n_dev = len(read_kaldi_text(workdir / "data/dev/text"))
    assert result["set"] == "dev" and result["n_utts"] == n_dev and result["tag"] == "tiny"
    assert result["first_epoch"]["model"] == "1epoch.pth" and result["final"]["model"] == "valid.loss.ave.pth"
    for which in ("first_epoch", "final"):
        entry = result[which]
        assert entry["cer"] == pytest.approx(entry["errors"] / entry["ref_chars"]) and entry["ref_chars"] > 0
    assert result["converged"] and result["max_cer"] == 10.0
    # ESPnet's validation loss (CTC) of every epoch: fine-tuning lowered it
    history = result["valid_history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert all("cer_ctc" in h for h in history)
    for log in ("tokens", "stats", "train_epoch1", "train", "decode_1epoch.1", "decode_final.1"):
        assert (workdir / f"log/step0/{log}.log").is_file(), log


def test_rerun_skips_the_stage(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    before = (workdir / "exp/step0/upstream.json").stat().st_mtime_ns
    r = run_recipe(["--workdir", str(workdir), "--stage", "4", "--stop_stage", "4"], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 0 already done" in r.stderr
    assert (workdir / "exp/step0/upstream.json").stat().st_mtime_ns == before


def test_blank_phase_fails_the_stage_with_advice(workdir: Path, repo_root: Path, cli_env: dict[str, str]) -> None:
    # last: undoes the stage's .done (training and decoding are kept and not redone)
    (workdir / "exp/step0/.done").unlink()
    r = run_recipe(["--workdir", str(workdir), "--stage", "4", "--stop_stage", "4", "--step0_max_cer", "0.5"],
               cli_env)
    assert r.returncode != 0
    assert "not below 0.5" in r.stderr and "blank phase" in r.stderr and "optim_conf.lr" in r.stderr
    assert "step 0: training" not in r.stderr, "finished training is not redone"
    assert json.loads((workdir / "exp/step0/dev_cer.json").read_text())["converged"] is False
    assert not (workdir / "exp/step0/.done").exists()

