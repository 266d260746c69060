"""Exporting a fine-tuned upstream: same format family, same loader, same hidden states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from espnet2_ext.ssl import SSLUpstream, UpstreamSpec, infer_upstream_name
from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint
from espnet2_ext.ssl.export import STEP0_PREFIX, export_upstream, load_step0_upstream
from espnet2_ext.ssl.upstream import LOCAL_UPSTREAMS

FORMATS = list(LOCAL_UPSTREAMS)  # every local checkpoint format the loader reads
WAV_LENS = torch.tensor([16000, 9001, 3203])


@pytest.fixture(scope="module")
def wavs() -> torch.Tensor:
    return torch.randn(len(WAV_LENS), int(WAV_LENS.max()), generator=torch.Generator().manual_seed(0))


def fine_tuned(spec: UpstreamSpec) -> SSLUpstream:
    """The upstream of ``spec`` with every transformer weight moved, as step 0 would."""
    upstream = SSLUpstream(spec, frozen=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in upstream.parameters():
            if p.requires_grad:  # the conv extractor stays frozen in fine-tuning
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    upstream.set_frozen(True)  # eval mode: no dropout while comparing outputs
    return upstream


def assert_same_states(a: SSLUpstream, b: SSLUpstream, wavs: torch.Tensor) -> None:
    states_a, lens_a = a(wavs, WAV_LENS)
    states_b, lens_b = b(wavs, WAV_LENS)
    assert torch.equal(lens_a, lens_b) and len(states_a) == len(states_b)
    for i, (x, y) in enumerate(zip(states_a, states_b)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0, msg=f"hidden state {i}")


@pytest.mark.parametrize("name", FORMATS)
def test_export_reloads_with_identical_hidden_states(
    name: str, tiny_ssl_checkpoints: dict[str, Path], tmp_path: Path, wavs: torch.Tensor
) -> None:
    original = UpstreamSpec.from_path(tiny_ssl_checkpoints[name])
    upstream = fine_tuned(original)
    spec = export_upstream(upstream, tmp_path / "upstream")
    assert spec.name == name and infer_upstream_name(spec.path) == name
    assert not (tmp_path / "upstream.tmp").exists()
    reloaded = SSLUpstream(spec)
    assert_same_states(upstream, reloaded, wavs)
    # the export is the fine-tuned model, not a copy of the original
    states, _ = SSLUpstream(original)(wavs, WAV_LENS)
    assert not torch.allclose(states[-1], reloaded(wavs, WAV_LENS)[0][-1], atol=1e-3)


def test_hf_export_keeps_the_original_config(tiny_ssl_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    source = tiny_ssl_checkpoints["hf_wav2vec2_custom"]
    spec = export_upstream(fine_tuned(UpstreamSpec.from_path(source)), tmp_path / "hf")
    for name in ("config.json", "preprocessor_config.json"):
        assert (Path(spec.path) / name).read_bytes() == (source / name).read_bytes(), name


def test_dict_export_keeps_everything_but_the_weights(tiny_ssl_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    source = torch.load(tiny_ssl_checkpoints["hubert_local"], weights_only=True)
    spec = export_upstream(fine_tuned(UpstreamSpec.from_path(tiny_ssl_checkpoints["hubert_local"])), tmp_path / "h")
    exported = torch.load(spec.path, weights_only=True)
    assert set(exported) == set(source) and Path(spec.path).name == "model.pt"
    for key in ("task_cfg", "model_cfg", "dictionaries_symbols"):
        assert exported[key] == source[key], key
    assert set(exported["model_weight"]) == set(source["model_weight"])


def test_hub_entry_exports_as_its_local_format(tmp_path: Path, wavs: torch.Tensor) -> None:
    hub = UpstreamSpec("xls_r_300m", cache_dir=tmp_path / "s3prl")
    with pytest.raises(ValueError, match="not cached at") as err:  # tells where the cached file must be
        SSLUpstream(hub)
    write_tiny_checkpoint("wav2vec2_local", re.search(r"not cached at (\S+)", str(err.value)).group(1))
    upstream = fine_tuned(hub)
    spec = export_upstream(upstream, tmp_path / "xlsr_ft")
    assert spec == UpstreamSpec("wav2vec2_local", path=str(tmp_path / "xlsr_ft" / "model.pt"))
    assert_same_states(upstream, SSLUpstream(spec), wavs)


def test_unsupported_upstream_is_a_clear_error(tiny_ssl_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    upstream = SSLUpstream(UpstreamSpec.from_path(tiny_ssl_checkpoints["wav2vec2_local"]))
    upstream.spec = UpstreamSpec("apc_local", path="x.ckpt")
    with pytest.raises(ValueError, match="cannot export upstream 'apc_local'"):
        export_upstream(upstream, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_step0_checkpoint_loads_strictly(tiny_ssl_checkpoints: dict[str, Path], tmp_path: Path, wavs) -> None:
    spec = UpstreamSpec.from_path(tiny_ssl_checkpoints["hf_wav2vec2_custom"])
    tuned = fine_tuned(spec)
    # an ESPnet ASR model's state dict: the upstream under frontend.upstream., plus the CTC head
    state = {STEP0_PREFIX + k: v for k, v in tuned.state_dict().items()}
    state["ctc.ctc_lo.weight"] = torch.zeros(5, tuned.hidden_size)
    torch.save(state, tmp_path / "valid.loss.best.pth")
    assert_same_states(tuned, load_step0_upstream(tmp_path / "valid.loss.best.pth", spec), wavs)

    key = next(k for k in state if ".encoder.layers.0." in k)
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"incomplete.pth: .* 1 missing \['" + re.escape(key[len(STEP0_PREFIX) :])):
        load_step0_upstream(tmp_path / "incomplete.pth", spec)
    other = UpstreamSpec.from_path(tiny_ssl_checkpoints["wav2vec2_local"])
    with pytest.raises(ValueError, match="was the model fine-tuned from this upstream"):
        load_step0_upstream(tmp_path / "valid.loss.best.pth", other)
    torch.save({"ctc.ctc_lo.weight": torch.zeros(1)}, tmp_path / "step1.pth")
    with pytest.raises(ValueError, match="no 'frontend.upstream.\\*' tensors"):
        load_step0_upstream(tmp_path / "step1.pth", spec)
