"""Stages 9-11 (step 2: discrete-unit ASR training, decoding, scoring) on a FAKE unit dump.

The session fixture ``step2_fake_run`` (tests/conftest.py) writes what stages 2 and 8 would leave
for one unit system (tests/step2_fake.py), then runs ``./run.sh --stage 9 --stop_stage 11`` on it as
a user would; the tests read its outputs. The units are a deterministic function of the characters
(two units per letter), so the tiny model has something to learn, but the tests assert only what
does not depend on accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet2_ext.bin import step2
from espnet2_ext.utils.fileio import read_kaldi_text
from tests.recipe import SharedRun, run_recipe
from tests.step2_fake import SETS, STEP2_ARGS, SYSTEM, TEST_SETS, write_fake_workdir


@pytest.fixture(scope="module")
def workdir(step2_fake_run: SharedRun) -> Path:
    """The fake unit dump after stages 9-11 (tests/conftest.py; test_step2_reproducible.py reads it too)."""
    return step2_fake_run.workdir


def exp(wd: Path) -> Path:
    return wd / "exp" / f"step2_{SYSTEM}"


# ------------------------------------------------------------------ training (stage 9)
def test_training_writes_a_discrete_asr_model_that_rebuilds_strictly(workdir: Path, tmp_path: Path) -> None:
    from espnet2.asr.discrete_asr_espnet_model import ESPnetDiscreteASRModel

    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask

    config = yaml.safe_load((exp(workdir) / "config.yaml").read_text(encoding="utf-8"))
    assert config["model"] == "discrete_asr" and config["token_type"] == "char"
    assert config["src_token_list"] == (workdir / f"dump/units/{SYSTEM}/src_bpe/tokens.txt").read_text().split()
    assert config["src_tokenizer_encode_conf"] == {"enable_sampling": True, "alpha": 0.1, "nbest_size": -1}
    model_file = exp(workdir) / "valid.acc.ave.pth"
    model, _ = DiscreteASRTask.build_model_from_file(None, model_file)
    assert isinstance(model, ESPnetDiscreteASRModel) and model.ctc is not None and model.specaug is not None
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    del state["ctc.ctc_lo.weight"]
    torch.save(state, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"1 missing tensor\(s\) \['ctc.ctc_lo.weight'\]"):
        DiscreteASRTask.build_model_from_file(exp(workdir) / "config.yaml", tmp_path / "incomplete.pth")
    check = json.loads((exp(workdir) / "length_check.json").read_text())
    assert check["utterances"] == SETS["train"] and check["ctc_infeasible"] == 0


def test_bpe_dropout_samples_the_source_in_training_only(workdir: Path) -> None:
    import argparse

    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask

    args = argparse.Namespace(**yaml.safe_load((exp(workdir) / "config.yaml").read_text(encoding="utf-8")))
    units = read_kaldi_text(workdir / f"dump/units/{SYSTEM}/train/text")
    utt, src = max(units.items(), key=lambda kv: len(kv[1]))
    tokens = read_kaldi_text(workdir / f"dump/units/{SYSTEM}/train/tokens")[utt].split()
    ids = {t: i for i, t in enumerate(args.src_token_list)}

    def segmentations(train: bool) -> set[tuple[int, ...]]:
        fn = DiscreteASRTask.build_preprocess_fn(args, train=train)
        return {tuple(fn(utt, {"src_text": src, "text": "a"})["src_text"]) for _ in range(30)}

    assert segmentations(train=False) == {tuple(ids[t] for t in tokens)}, "decoding sees the dumped tokens"
    assert len(segmentations(train=True)) > 1, "training sees BPE-dropout variants"


# ------------------------------------------------------------------ decoding (stage 10)
def test_every_test_utterance_has_a_hypothesis(workdir: Path) -> None:
    tokens = set((workdir / "data/token_list/char/tokens.txt").read_text(encoding="utf-8").split())
    for set_name in TEST_SETS:
        hyps = read_kaldi_text(exp(workdir) / "decode" / set_name / "text", allow_empty_value=True)
        assert list(hyps) == sorted(read_kaldi_text(workdir / "data" / set_name / "text"))
        assert set("".join(hyps.values()).replace(" ", "")) <= tokens
        shards = sorted((exp(workdir) / "decode" / set_name).glob("output.*/keys.scp"))
        assert len(shards) == 2, "nj=2 jobs, each decoding its shard"
    assert (exp(workdir) / "decode/.done").is_file()


def test_ctc_best_path_decoding_is_the_collapsed_argmax_of_the_ctc_branch(workdir: Path, tmp_path: Path) -> None:
    """conf/decode/step2_demo.yaml (beam 1, CTC weight 1): the CTC branch's best path, computed here independently."""
    from espnet2_ext.bin import discrete_asr_inference
    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask

    src = workdir / f"dump/units/{SYSTEM}/test_1h/text"
    discrete_asr_inference.main([
        "--config", "conf/decode/step2_demo.yaml", "--ngpu", "0", "--batch_size", "1",
        "--data_path_and_name_and_type", f"{src},src_text,text", "--output_dir", str(tmp_path / "out"),
        "--mt_train_config", str(exp(workdir) / "config.yaml"), "--mt_model_file", str(exp(workdir) / "valid.acc.ave.pth"),
    ])  # fmt: skip
    got = read_kaldi_text(tmp_path / "out/1best_recog/token_int", allow_empty_value=True)
    assert sorted(got) == sorted(read_kaldi_text(src))

    config = exp(workdir) / "config.yaml"
    model, args = DiscreteASRTask.build_model_from_file(config, exp(workdir) / "valid.acc.ave.pth")
    model.eval()
    preprocess = DiscreteASRTask.build_preprocess_fn(args, train=False)
    for utt, units in read_kaldi_text(src).items():
        ids = torch.as_tensor(preprocess(utt, {"src_text": units, "text": "a"})["src_text"]).unsqueeze(0)
        with torch.no_grad():
            enc, _ = model.encode(ids, torch.tensor([ids.shape[1]]))
            frames = model.ctc.log_softmax(enc)[0].argmax(-1).tolist()
        expected = [f for i, f in enumerate(frames) if f != 0 and (i == 0 or f != frames[i - 1])]
        assert [int(t) for t in got[utt].split()] == expected, utt


def test_submission_files(workdir: Path) -> None:
    sub = exp(workdir) / "submission"
    vocab = json.loads((sub / "vocab.json").read_text(encoding="utf-8"))
    assert list(vocab) == ["0"] and len(vocab["0"]) == 16
    for set_name in TEST_SETS:
        units = json.loads((sub / set_name / "units.json").read_text(encoding="utf-8"))
        dumped = read_kaldi_text(workdir / f"dump/units/{SYSTEM}/{set_name}/tokens")
        assert units == {u: [t.split()] for u, t in sorted(dumped.items())}
        assert (sub / set_name / "text").read_text() == (exp(workdir) / "decode" / set_name / "text").read_text()


# ------------------------------------------------------------------ scoring (stage 11)
def test_scores_include_the_bitrate_of_the_source_tokens(workdir: Path) -> None:
    scores = json.loads((exp(workdir) / "score/scores.json").read_text(encoding="utf-8"))
    assert set(scores["sets"]) == set(TEST_SETS)
    bitrate = scores["summary"]["bitrate"]
    pieces = sum(
        len(v.split())
        for s in TEST_SETS
        for v in read_kaldi_text(workdir / f"dump/units/{SYSTEM}/{s}/tokens", allow_empty_value=True).values()
    )
    seconds = 2.0 * sum(SETS[s] for s in TEST_SETS)
    assert bitrate["streams"] == [{"name": "units", "vocab_size": 16, "n_tokens": pieces}], "V = the 16 BPE pieces"
    assert bitrate["pooled_bps"] == pytest.approx(pieces / seconds * np.log2(16))


def test_systems_train_in_parallel_and_a_failed_one_is_named(
    repo_root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    write_fake_workdir(wd, ("baseline", "twostep"))
    # twostep's shapes are marked collected but missing: its training (not its preparation) fails
    (wd / "exp/step2_twostep/stats").mkdir(parents=True)
    (wd / "exp/step2_twostep/stats/.done").touch()
    args = [*STEP2_ARGS, "--unit_systems", "baseline twostep", "--max_train_jobs", "2", "--train_threads", "2"]
    r = run_recipe(["--workdir", str(wd), "--stage", "9", "--stop_stage", "9", *args], cli_env)
    assert r.returncode != 0
    assert "training baseline twostep (2 at once, 1 CPU thread(s) each)" in r.stderr
    assert "training failed for: twostep (" in r.stderr
    assert (wd / "exp/step2_baseline/.done").is_file(), "the other system still trains to the end"
    assert not (wd / "exp/step2_twostep/.done").exists()
    log = (wd / "log/step2/baseline/train.log").read_text()
    assert "# Accounting: time=" in log and "threads=1\n" in log, "2 trainings at once share the 2 threads"
    assert "src_text_shape" in (wd / "log/step2/twostep/train.log").read_text(), "the failed one's log says why"
    assert not list((wd / "log").glob(".parallel.*")), "the exit statuses are cleaned up"


def test_stages_are_resumable(repo_root: Path, cli_env: dict[str, str], step2_fake_run: SharedRun) -> None:
    workdir = step2_fake_run.workdir
    before = (exp(workdir) / "valid.acc.ave.pth").stat().st_mtime
    with step2_fake_run.lock:  # a rerun on the shared workdir
        r = run_recipe(["--workdir", str(workdir), "--stage", "9", "--stop_stage", "10", *STEP2_ARGS], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already trained" in r.stderr and "already decoded" in r.stderr
    assert (exp(workdir) / "valid.acc.ave.pth").stat().st_mtime == before


def test_seed_repeats_train_decode_and_score_next_to_the_configs_seed(
    repo_root: Path, cli_env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    shutil.copytree(workdir, wd)
    args = [*STEP2_ARGS, "--step2_seeds", "1"]
    r = run_recipe(["--workdir", str(wd), "--stage", "9", "--stop_stage", "12", *args], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"step 2 {SYSTEM} already trained" in r.stderr, "the config's seed is the run trained before"
    repeat = wd / "exp" / f"step2_{SYSTEM}.seed1"
    config_seed = yaml.safe_load((repo_root / "conf/step2/tiny.yaml").read_text())["seed"]
    assert yaml.safe_load((exp(wd) / "config.yaml").read_text())["seed"] == config_seed != 1
    assert yaml.safe_load((repeat / "config.yaml").read_text())["seed"] == 1
    assert not (repeat / "stats").exists(), "a repeat batches by its system's shapes, not a second collection"
    first = torch.load(exp(wd) / "valid.acc.ave.pth", map_location="cpu")
    again = torch.load(repeat / "valid.acc.ave.pth", map_location="cpu")
    assert first.keys() == again.keys() and any(not torch.equal(first[k], again[k]) for k in first)
    for s in TEST_SETS:
        assert read_kaldi_text(repeat / "decode" / s / "text", allow_empty_value=True).keys() == \
            read_kaldi_text(wd / "data" / s / "text").keys()
    base_scores, repeat_scores = (json.loads((d / "score/scores.json").read_text()) for d in (exp(wd), repeat))
    assert repeat_scores["summary"]["bitrate"] == base_scores["summary"]["bitrate"], "the same units"
    text = (wd / "RESULTS.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith(f"| `step2_{SYSTEM}` | {config_seed}, 1 |"))
    ml = [base_scores["summary"]["mlsuperb"]["cer_percent"], repeat_scores["summary"]["mlsuperb"]["cer_percent"]]
    assert f"{ml[0]:.2f}, {ml[1]:.2f}" in row
    assert f"(`step2_{SYSTEM}.seed1`)" not in text, "a repeat is not a row of its own"


# ------------------------------------------------------------------ helpers
def test_ctc_min_frames_counts_a_blank_between_repeats() -> None:
    assert step2.ctc_min_frames(list("abc")) == 3
    assert step2.ctc_min_frames(list("abbc")) == 5
    assert step2.ctc_min_frames([]) == 0


def test_check_lengths_fails_when_subsampling_leaves_too_few_frames(workdir: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/step2/tiny.yaml").read_text())
    config["encoder_conf"]["input_layer"] = "conv2d6"  # 6x fewer frames than units
    (tmp_path / "coarse.yaml").write_text(yaml.safe_dump(config))
    units = workdir / f"dump/units/{SYSTEM}/train/tokens"
    args = ["check_lengths", "--src_tokens", str(units), "--text", str(workdir / "data/train/text")]
    assert step2.main([*args, "--config", str(tmp_path / "coarse.yaml"), "--out", str(tmp_path / "c.json")]) == 1
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["encoder_subsampling"] >= 5 and report["ctc_infeasible"] == SETS["train"]
