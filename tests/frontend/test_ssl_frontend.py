"""SSLFrontend: layer selection, exact lengths, padding safety, frozen upstream kept out of checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from espnet2_ext.frontend import SSLFrontend
from espnet2_ext.ssl import UpstreamSpec
from espnet2_ext.ssl.checkpoints import write_tiny_hf_wav2vec2

NUM_LAYERS = 3  # -> 4 hidden states
# odd lengths, one shorter than the 400-sample receptive field
WAV_LENS = torch.tensor([12000, 9237, 5003, 350])


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = write_tiny_hf_wav2vec2(tmp_path_factory.mktemp("ssl") / "hf_wav2vec2", num_layers=NUM_LAYERS)
    return UpstreamSpec.from_path(path).to_dict()


@pytest.fixture(scope="module")
def weighted(spec: dict) -> SSLFrontend:
    """A frozen weighted-sum frontend with non-uniform weights (tests must not change it)."""
    frontend = SSLFrontend(upstream=spec)
    with torch.no_grad():
        frontend.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    return frontend.eval()


@pytest.fixture(scope="module")
def wavs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # garbage (not zeros) after each length: nothing may look at it
    return torch.randn(len(WAV_LENS), int(WAV_LENS.max()), generator=gen)


def test_weights_are_a_softmax_summing_to_one(weighted: SSLFrontend) -> None:
    weights = weighted.layer_weights_softmax()
    assert weights.shape == (NUM_LAYERS + 1,)
    assert torch.all(weights > 0)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(weights, torch.softmax(weighted.layer_weights, 0))


def test_weighted_sum_of_hidden_states(weighted: SSLFrontend, wavs: torch.Tensor) -> None:
    feats, feats_lens = weighted(wavs, WAV_LENS)
    states, lens = weighted.upstream(wavs, WAV_LENS)
    expected = sum(w * h for w, h in zip(weighted.layer_weights_softmax(), states))
    torch.testing.assert_close(feats, expected)
    assert feats.shape == (len(WAV_LENS), int(lens.max()), weighted.output_size())
    assert weighted.output_size() == weighted.upstream.hidden_size == 32


def test_layer_subset_with_normalized_layers(spec: dict, wavs: torch.Tensor) -> None:
    frontend = SSLFrontend(upstream=spec, normalize_layers=True, layers=[1, 3]).eval()
    assert frontend.layers == [1, 3]
    torch.testing.assert_close(frontend.layer_weights_softmax(), torch.full((2,), 0.5))  # zeros init = uniform
    torch.testing.assert_close(frontend.layer_weights_softmax(full=True), torch.tensor([0.0, 0.5, 0.0, 0.5]))
    feats, feats_lens = frontend(wavs, WAV_LENS)
    states, _ = frontend.upstream(wavs, WAV_LENS)
    normed = [nn.functional.layer_norm(states[i], (32,)) for i in (1, 3)]
    torch.testing.assert_close(feats, 0.5 * normed[0] + 0.5 * normed[1])
    for b, n in enumerate(feats_lens.tolist()):
        assert not feats[b, n:].any(), "padded frames stay zero after normalisation"
    assert list(frontend.state_dict()) == ["layer_weights"], "no affine parameters"


@pytest.mark.parametrize("selection, index", [("last", NUM_LAYERS), (-3, 1)])
def test_single_layer_selection_is_that_hidden_state(
    spec: dict, weighted: SSLFrontend, wavs: torch.Tensor, selection: str | int, index: int
) -> None:
    frontend = SSLFrontend(upstream=spec, layer_selection=selection, fs="16k").eval()  # ESPnet-style fs
    assert frontend.layer_weights is None and frontend.layers == [index]
    torch.testing.assert_close(frontend.layer_weights_softmax(), torch.ones(1))
    torch.testing.assert_close(
        frontend.layer_weights_softmax(full=True), nn.functional.one_hot(torch.tensor(index), 4).float()
    )
    feats, _ = frontend(wavs, WAV_LENS)
    states, _ = weighted.upstream(wavs, WAV_LENS)  # the same checkpoint
    torch.testing.assert_close(feats, states[index])
    assert list(frontend.state_dict()) == [], "a frozen single-layer frontend has nothing to save"


def test_lengths_are_the_upstreams_and_padding_never_changes_a_frame(weighted: SSLFrontend, wavs: torch.Tensor) -> None:
    feats, feats_lens = weighted(wavs, WAV_LENS)
    assert feats_lens.tolist() == weighted.upstream.num_frames(WAV_LENS).tolist() == [37, 28, 15, 1]
    assert feats.size(1) == 37
    for b, length in enumerate(WAV_LENS.tolist()):
        alone, alone_lens = weighted(wavs[b : b + 1, :length], WAV_LENS[b : b + 1])
        assert alone_lens.tolist() == [feats_lens[b].item()]
        torch.testing.assert_close(feats[b, : feats_lens[b]], alone[0], atol=1e-4, rtol=0, msg=f"utterance {b}")
        assert not feats[b, feats_lens[b] :].any(), "frames after the length must be zero"


def test_frozen_upstream_stays_in_eval_mode_and_gets_no_gradients(weighted: SSLFrontend, wavs: torch.Tensor) -> None:
    frontend = weighted
    parent = nn.ModuleDict({"frontend": frontend}).train()  # what ESPnet's trainer does every epoch
    assert frontend.training
    assert not any(m.training for m in frontend.upstream.upstream.modules()), "dropout must stay off"
    assert not any(p.requires_grad for p in frontend.upstream.parameters())
    feats, _ = frontend(wavs, WAV_LENS)
    feats.pow(2).mean().backward()
    assert frontend.layer_weights.grad is not None and frontend.layer_weights.grad.abs().sum() > 0
    assert all(p.grad is None for p in frontend.upstream.parameters())
    parent.eval().train()
    assert not any(m.training for m in frontend.upstream.upstream.modules())
    frontend.eval().layer_weights.grad = None  # leave the shared fixture as it was


def test_frozen_upstream_is_neither_saved_nor_required(spec: dict, weighted: SSLFrontend, wavs: torch.Tensor) -> None:
    model = nn.ModuleDict({"frontend": weighted})  # keys carry a prefix, as inside ESPnet's model
    state = model.state_dict()
    assert list(state) == ["frontend.layer_weights"]

    # a fresh model loads it strictly (the trainer's --resume does exactly this) and computes the same
    fresh = nn.ModuleDict({"frontend": SSLFrontend(upstream=spec)}).eval()
    result = fresh.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(fresh["frontend"](wavs, WAV_LENS)[0], weighted(wavs, WAV_LENS)[0])

    # anything else missing is still reported
    result = fresh.load_state_dict({}, strict=False)
    assert result.missing_keys == ["frontend.layer_weights"] and result.unexpected_keys == []
    with pytest.raises(RuntimeError, match="layer_weights"):
        fresh.load_state_dict({}, strict=True)

    # upstream tensors that are present (e.g. a step-0 checkpoint) are loaded, not rejected
    full = {f"frontend.upstream.{k}": v for k, v in weighted.upstream.state_dict().items()}
    key = next(k for k in full if k.endswith("encoder.layers.0.attention.k_proj.weight"))
    full[key] = torch.zeros_like(full[key])
    result = fresh.load_state_dict({**state, **full}, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(fresh.state_dict()) == ["frontend.layer_weights"]
    assert torch.equal(fresh.get_parameter(key), torch.zeros_like(full[key]))


def test_trainable_upstream_is_saved_trained_and_reloadable(spec: dict, wavs: torch.Tensor) -> None:
    frontend = SSLFrontend(upstream=spec, freeze_upstream=False, layer_selection="last")
    model = nn.ModuleDict({"frontend": frontend}).train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    upstream_keys = {f"frontend.upstream.{k}" for k in frontend.upstream.state_dict()}
    assert set(initial) == upstream_keys and len(upstream_keys) > 50
    assert frontend.upstream.upstream.training, "a trainable upstream trains (dropout on)"
    feats, _ = frontend(wavs, WAV_LENS)
    feats.pow(2).mean().backward()
    layer_grads = {n: p.grad for n, p in frontend.upstream.named_parameters() if ".encoder.layers." in n}
    assert layer_grads and all(g is not None for g in layer_grads.values()), "every transformer layer is trained"

    # a checkpoint without the upstream's tensors is incomplete
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict({}, strict=True)

    # ESPnet's --init overwrites every parameter, then asks the frontend to restore its SSL weights
    with torch.no_grad():
        for p in frontend.upstream.parameters():
            p.zero_()
    frontend.reload_pretrained_parameters()
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fs": 8000}, "16000 Hz"),
        ({"fs": "8k"}, "16000 Hz"),
        ({"layer_selection": "first"}, "layer_selection"),
        ({"layer_selection": True}, "layer_selection"),
        ({"layer_selection": 4}, "out of range"),
        ({"layer_selection": "last", "layers": [1]}, "only applies"),
        ({"layers": [0, 4]}, "distinct hidden-state indices"),
        ({"layers": [1, 1]}, "distinct hidden-state indices"),
        ({"layers": []}, "distinct hidden-state indices"),
    ],
)
def test_bad_configs_are_rejected(spec: dict, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SSLFrontend(upstream=spec, **kwargs)


def test_bad_upstream_spec_is_rejected(spec: dict) -> None:
    with pytest.raises(ValueError, match="unknown UpstreamSpec key"):
        SSLFrontend(upstream={**spec, "layer": 3})
