"""SSLUpstream: every local format loads offline, lengths are exact, padding never changes a frame."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from espnet2_ext.ssl import SSLUpstream, UpstreamSpec, checkpoint_sha256, infer_upstream_name
from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint
from espnet2_ext.ssl.upstream import LOCAL_UPSTREAMS

FORMATS = list(LOCAL_UPSTREAMS)  # every local checkpoint format the loader reads
# 1 s, odd lengths, one shorter than s3prl's 800-sample minimum and one just over the receptive field.
WAV_LENS = torch.tensor([16000, 11237, 7003, 650, 401])


@pytest.fixture(scope="module")
def load(tiny_ssl_checkpoints: dict[str, Path]) -> Callable[[str], SSLUpstream]:
    """Load (once per module) the tiny checkpoint of an upstream name, frozen."""
    cache: dict[str, SSLUpstream] = {}

    def _load(name: str) -> SSLUpstream:
        if name not in cache:
            cache[name] = SSLUpstream(UpstreamSpec.from_path(tiny_ssl_checkpoints[name]))
        return cache[name]

    return _load


@pytest.fixture(scope="module")
def wavs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    wavs = torch.randn(len(WAV_LENS), int(WAV_LENS.max()), generator=gen)
    # garbage (not zeros) after each length: the upstream must not look at it
    return wavs


def assert_padding_equivalent(upstream: SSLUpstream, wavs: torch.Tensor, wav_lens: torch.Tensor) -> None:
    """Each utterance in the padded batch gives the frames it gives alone, in every hidden state."""
    states, lens = upstream(wavs, wav_lens)
    for b, length in enumerate(wav_lens.tolist()):
        alone, alone_lens = upstream(wavs[b : b + 1, :length], wav_lens[b : b + 1])
        assert alone_lens.tolist() == [lens[b].item()]
        for i, (h, h_alone) in enumerate(zip(states, alone)):
            torch.testing.assert_close(h[b, : lens[b]], h_alone[0], atol=1e-4, rtol=0, msg=f"utt {b}, state {i}")
            assert not h[b, lens[b] :].any(), "frames after the length must be zero"


def test_spec_roundtrip_and_validation(tmp_path: Path) -> None:
    spec = UpstreamSpec("hubert_local", path=tmp_path / "m.pt")
    assert spec.path == str(tmp_path / "m.pt")  # Path accepted, stored as str
    assert UpstreamSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert UpstreamSpec("xls_r_300m", cache_dir="/c").to_dict() == {
        "name": "xls_r_300m",
        "path": None,
        "cache_dir": "/c",
    }
    with pytest.raises(ValueError, match="set UpstreamSpec.path"):
        UpstreamSpec("hf_wav2vec2_custom")
    with pytest.raises(ValueError, match="hub name and takes no path"):
        UpstreamSpec("xls_r_300m", path="x.pt")
    with pytest.raises(ValueError, match="unknown UpstreamSpec key"):
        UpstreamSpec.from_dict({"name": "xls_r_300m", "ckpt": "x"})


@pytest.mark.parametrize("name", FORMATS)
def test_infer_upstream_name(name: str, tiny_ssl_checkpoints: dict[str, Path]) -> None:
    assert infer_upstream_name(tiny_ssl_checkpoints[name]) == name


def test_infer_rejects_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        infer_upstream_name(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: not a readable"):
        infer_upstream_name(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: unknown checkpoint layout"):
        infer_upstream_name(tmp_path / "other.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type 'bert'"):
        infer_upstream_name(tmp_path / "hf")


def test_checkpoint_sha256(tmp_path: Path, tiny_ssl_checkpoints: dict[str, Path], load) -> None:
    pt = tiny_ssl_checkpoints["hubert_local"]
    assert checkpoint_sha256(pt) == hashlib.sha256(pt.read_bytes()).hexdigest()
    assert load("hubert_local").checkpoint_sha256 == checkpoint_sha256(pt)
    hf = tiny_ssl_checkpoints["hf_wav2vec2_custom"]
    assert load("hf_wav2vec2_custom").checkpoint_sha256 == checkpoint_sha256(hf)
    assert {p.name for p in load("espnet_hubert_local").checkpoint_files} == {"model.pth", "config.yaml"}
    record = json.loads(json.dumps(load("hubert_local").provenance()))
    assert record["sha256"] == checkpoint_sha256(pt) and record["num_hidden_states"] == 3
    assert UpstreamSpec.from_dict(record["upstream"]) == load("hubert_local").spec
    # a directory digest depends on file contents only, not on where the directory lives
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in hf.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert checkpoint_sha256(copy) == checkpoint_sha256(hf)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert checkpoint_sha256(copy) != checkpoint_sha256(hf)


@pytest.mark.parametrize("name", FORMATS)
def test_format_loads_with_exact_lengths_and_padding_safe(name: str, load, wavs: torch.Tensor) -> None:
    upstream = load(name)
    # tiny models: 2 transformer layers of 32 dims; ESPnet's expert has no CNN state 0
    assert upstream.num_hidden_states == (2 if name == "espnet_hubert_local" else 3)
    assert upstream.hidden_size == 32
    assert (upstream.downsample_rate, upstream.frame_rate_hz, upstream.receptive_field) == (320, 50.0, 400)
    assert upstream.padding_strategy == "batched"

    states, lens = upstream(wavs, WAV_LENS)
    # conv formula: floor((L - 400) / 320) + 1, and one frame for anything shorter than 400 samples
    assert lens.tolist() == [49, 34, 21, 1, 1]
    assert upstream.num_frames(torch.tensor([399, 720])).tolist() == [1, 2]
    assert len(states) == upstream.num_hidden_states
    assert all(h.shape == (len(WAV_LENS), 49, 32) for h in states)
    assert_padding_equivalent(upstream, wavs, WAV_LENS)


@pytest.mark.parametrize("name", ["hf_wav2vec2_custom", "hubert_local"])
def test_group_norm_extractor_runs_per_utterance(name: str, tmp_path: Path, wavs: torch.Tensor) -> None:
    # wav2vec2-base-style GroupNorm over time would see the padding: each utterance runs alone
    ckpt = write_tiny_checkpoint(name, tmp_path / ("m.pt" if name == "hubert_local" else "m"), extractor_norm="group")
    upstream = SSLUpstream(UpstreamSpec.from_path(ckpt))
    assert upstream.padding_strategy == "per_utterance"
    assert_padding_equivalent(upstream, wavs[:3], WAV_LENS[:3])


def test_frozen_stays_in_eval_mode(load, wavs: torch.Tensor) -> None:
    upstream = load("hf_wav2vec2_custom")
    upstream.train()  # what ESPnet's trainer does to the whole model every epoch
    assert upstream.training and not any(m.training for m in upstream.upstream.modules())
    assert not any(p.requires_grad for p in upstream.parameters())
    first, _ = upstream(wavs[:2], WAV_LENS[:2])
    second, _ = upstream(wavs[:2], WAV_LENS[:2])
    assert not first[-1].requires_grad
    torch.testing.assert_close(first[-1], second[-1], atol=0, rtol=0)  # no dropout


def test_trainable_mode_gets_gradients_except_conv_extractor(tiny_ssl_checkpoints: dict[str, Path], wavs) -> None:
    upstream = SSLUpstream(UpstreamSpec.from_path(tiny_ssl_checkpoints["hf_wav2vec2_custom"]), frozen=False)
    upstream.train()
    assert upstream.upstream.training
    states, lens = upstream(wavs[:2], WAV_LENS[:2])
    assert len(states) == 3  # layerdrop is off, so training keeps every hidden state
    states[-1].sum().backward()
    grads = {n: p.grad for n, p in upstream.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".encoder.layers." in n)
    assert all(g is None for n, g in grads.items() if ".feature_extractor." in n)
    # one key per weight, all under the wrapped s3prl model (what an ESPnet checkpoint will hold)
    state = upstream.state_dict()
    assert all(k.startswith("upstream.upstream.model.") for k in state)
    assert len(state) == len(upstream.upstream.upstream.model.state_dict())


def test_hub_name_loads_from_cache_only(tmp_path: Path) -> None:
    spec = UpstreamSpec("xls_r_300m", cache_dir=tmp_path / "s3prl")
    with pytest.raises(ValueError, match="not cached at .* downloads are off") as err:
        SSLUpstream(spec)
    message = str(err.value)
    assert "wget -O" in message and "https://" in message
    # the file the message names is exactly where a pre-downloaded checkpoint is picked up
    expected = Path(re.search(r"not cached at (\S+)", message).group(1))
    assert expected.parent == tmp_path / "s3prl"
    write_tiny_checkpoint("wav2vec2_local", expected)
    upstream = SSLUpstream(spec)
    assert upstream.checkpoint_files == [expected.resolve()]
    assert (upstream.num_hidden_states, upstream.padding_strategy) == (3, "batched")


def test_load_errors_name_the_path(tmp_path: Path, tiny_ssl_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="nope.pt: SSL checkpoint for upstream 'hubert_local' not found"):
        SSLUpstream(UpstreamSpec("hubert_local", path=tmp_path / "nope.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: could not load as s3prl upstream 'hubert_local'"):
        SSLUpstream(UpstreamSpec("hubert_local", path=tmp_path / "garbage.pt"))
    with pytest.raises(ValueError, match="unknown s3prl upstream 'xls_r_300'.*xls_r_300m"):
        SSLUpstream(UpstreamSpec("xls_r_300"))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_bytes((tiny_ssl_checkpoints["hf_wav2vec2_custom"] / "config.json").read_bytes())
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        SSLUpstream(UpstreamSpec("hf_wav2vec2_custom", path=hf))


def test_espnet_checkpoint_must_hold_every_weight(tmp_path: Path) -> None:
    # ESPnet loads with strict=False; a checkpoint missing weights must not give a random model
    ckpt = write_tiny_checkpoint("espnet_hubert_local", tmp_path / "esp")
    state = torch.load(ckpt / "model.pth")
    torch.save({k: v for k, v in state.items() if "layers.1." not in k}, ckpt / "model.pth")
    with pytest.raises(ValueError, match="model.pth: .* weight\\(s\\) missing"):
        SSLUpstream(UpstreamSpec.from_path(ckpt))
    torch.save(state, ckpt / "other.pth")
    with pytest.raises(ValueError, match="exactly one .pth"):
        SSLUpstream(UpstreamSpec.from_path(ckpt))
    assert SSLUpstream(UpstreamSpec.from_path(ckpt / "other.pth")).num_hidden_states == 2
