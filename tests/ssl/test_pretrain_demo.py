"""Demo SSL pre-training: phoneme targets, batching, resumable training, loadable export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet2_ext.ssl.phonemes import ipa, ipa_tokens, transcribe
from espnet2_ext.ssl.pretrain_demo import TrainConfig, length_batches, pretrain
from espnet2_ext.utils.fileio import DataError, write_kaldi_text


def test_ipa_tokens_drop_stress_and_mark_words() -> None:
    assert ipa_tokens("ɡˈuːtən mˌɔɾ") == ["ɡ", "u", "ː", "t", "ə", "n", "|", "m", "ɔ", "ɾ"]
    assert ipa_tokens("  ") == []


def test_espeak_ipa_follows_the_language() -> None:
    assert ipa("hallo", "de") != ipa("hallo", "en-us")
    with pytest.raises(DataError, match="no espeak-ng voice for language"):
        transcribe({"a_xyz_1": "text"}, {"a_xyz_1": "xyz"}, {"eng": "en-us"})


def test_length_batches_cover_every_utterance_once_within_budget() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1000, 50000) for _ in range(200)]
    batches = length_batches(lengths, 200000, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200000


def _data_dir(root: Path, name: str, n: int, rng: np.random.Generator) -> dict[str, str]:
    d = root / name
    d.mkdir(parents=True)
    wav_scp, labels = {}, {}
    for i in range(n):
        utt = f"{name}_{i:03d}"
        path = d / f"{utt}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * rng.uniform(0.5, 1.2)))).astype(np.float32), 16000)
        wav_scp[utt] = str(path)
        labels[utt] = "abc dab" if i % 2 else "bad cab"
    write_kaldi_text(d / "wav.scp", sorted(wav_scp.items()))
    return labels


def test_pretraining_resumes_and_exports_a_loadable_upstream(repo_root: Path, tmp_path: Path) -> None:
    from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec

    rng = np.random.default_rng(0)
    train = _data_dir(tmp_path, "train", 8, rng)
    dev = _data_dir(tmp_path, "dev", 3, rng)
    conf = yaml.safe_load((repo_root / "conf/ssl/tiny_ssl.yaml").read_text())
    train_conf = TrainConfig(**{**conf["train"], "batch_seconds": 3.0, "epochs": 1})
    out = tmp_path / "exp"
    log1 = pretrain(conf["model"], train_conf, tmp_path / "train", tmp_path / "dev", train, dev, out)
    assert [e["epoch"] for e in log1["epochs"]] == [1]
    # a rerun with more epochs continues from the epoch-1 checkpoint instead of starting again
    train_conf2 = TrainConfig(**{**conf["train"], "batch_seconds": 3.0, "epochs": 2})
    log2 = pretrain(conf["model"], train_conf2, tmp_path / "train", tmp_path / "dev", train, dev, out)
    assert [e["epoch"] for e in log2["epochs"]] == [1, 2]
    assert log2["epochs"][0] == log1["epochs"][0]
    assert json.loads((out / "train_log.json").read_text())["epochs"] == log2["epochs"]
    assert (out / "phonemes.txt").read_text().split() == ["<blank>", "a", "b", "c", "d", "|"]
    up = SSLUpstream(UpstreamSpec.from_path(out / "model"))
    assert up.num_hidden_states == conf["model"]["num_hidden_layers"] + 1
    assert up.hidden_size == conf["model"]["hidden_size"]


def test_masked_prediction_trains_the_top_state_and_exports_a_plain_wav2vec2(repo_root: Path, tmp_path: Path) -> None:
    """CTC on a middle state + masked MFCC-class prediction on top (conf/ssl/demo_ssl_midlayer.yaml's recipe)."""
    import torch
    from safetensors.torch import load_file

    from espnet2_ext.ssl.pretrain_demo import PhonemeCTC
    from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec

    rng = np.random.default_rng(0)
    train = _data_dir(tmp_path, "train", 8, rng)
    dev = _data_dir(tmp_path, "dev", 3, rng)
    conf = yaml.safe_load((repo_root / "conf/ssl/tiny_ssl.yaml").read_text())
    train_conf = TrainConfig(**{**conf["train"], "batch_seconds": 3.0, "epochs": 1, "ctc_layer": 1,
                                "mlm_weight": 1.0, "mlm_k": 8})
    out = tmp_path / "exp"
    log = pretrain(conf["model"], train_conf, tmp_path / "train", tmp_path / "dev", train, dev, out)
    assert 0 < log["epochs"][0]["train_mlm_loss"] < 10
    # the mask embedding and the heads stay out of the checkpoint: same tensors as a fresh wav2vec2
    assert set(load_file(out / "model/model.safetensors")) == set(load_file(out / "init/model.safetensors"))

    up = SSLUpstream(UpstreamSpec.from_path(out / "model"), frozen=False)
    model = PhonemeCTC(up, 5, ctc_layer=1, mlm_k=8, mask_prob=0.5, mask_length=4)
    wavs, lens = torch.randn(2, 16000), torch.tensor([16000, 12000])
    model.train()
    _, frames, mlm = model.forward_all(wavs, lens)
    assert mlm.shape == (2, int(frames.max()), 8)
    share = model.frame_mask.float().mean().item()
    assert 0.2 < share < 0.8  # spans of 4 started with probability 0.5 / 4 per frame
    model.eval()
    with torch.no_grad():
        a, _, _ = model.forward_all(wavs, lens)
        b, _, _ = model.forward_all(wavs, lens)
    assert model.frame_mask is None and torch.equal(a, b)  # no masking at evaluation
    with pytest.raises(ValueError, match="ctc_layer 3 is not one of the model's 3 hidden states"):
        PhonemeCTC(up, 5, ctc_layer=3)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "conf/ssl").glob("*.yaml")))
def test_ssl_configs_parse_and_their_ctc_layer_exists(repo_root: Path, name: str) -> None:
    from transformers import Wav2Vec2Config

    conf = yaml.safe_load((repo_root / "conf/ssl" / name).read_text())
    assert set(conf) == {"model", "train"}
    train_conf = TrainConfig(**conf["train"])
    states = Wav2Vec2Config(**conf["model"]).num_hidden_layers + 1
    assert -states <= train_conf.ctc_layer < states
