"""One feature spec for every path: modes, step 1's weights, and the same features everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet2_ext.tokenizer.features import FeatureExtractor, FeatureSpec, baseline_layer, mfcc_num_frames
from espnet2_ext.utils.fileio import DataError

from .conftest import write_layer_weights

LOGITS = [0.7, -1.0, 1.5]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([16000, 5000, 12345])
    return torch.randn(3, 16000, generator=g) * 0.1, lens


@pytest.fixture(scope="module")
def specs(tiny_upstream_info: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FeatureSpec]:
    weights = write_layer_weights(tmp_path_factory.mktemp("step1") / "layer_weights.json", tiny_upstream_info, LOGITS)
    return {
        "learned": FeatureSpec.parse("learned", tiny_upstream_info, weights),
        "single": FeatureSpec.parse("single:-2", tiny_upstream_info),
        "uniform": FeatureSpec.parse("uniform", tiny_upstream_info, normalize_layers=True),
        "mfcc": FeatureSpec.parse("mfcc", None),
    }


def test_modes_select_and_weight_the_hidden_states(specs: dict[str, FeatureSpec]) -> None:
    w = np.exp(LOGITS) / np.exp(LOGITS).sum()
    np.testing.assert_allclose(specs["learned"].weights(), w, rtol=1e-6)
    assert specs["learned"].normalize_layers is True, "step 1's normalize_layers applies"
    assert specs["single"].layers == (1,) and specs["single"].weights().tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(specs["uniform"].weights(), [1 / 3] * 3, rtol=1e-6)
    assert specs["mfcc"].upstream is None
    for spec in specs.values():
        assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_baseline_layer_is_the_challenges_relative_depth() -> None:
    assert baseline_layer(25) == 21  # XLS-R 300M: 24 transformer layers
    assert baseline_layer(9) == 7  # the demo model: 8 layers


def test_learned_features_equal_step_1s_frontend(specs: dict[str, FeatureSpec], tiny_upstream_info: dict) -> None:
    from espnet2_ext.frontend.ssl_frontend import SSLFrontend

    frontend = SSLFrontend(upstream=tiny_upstream_info["upstream"], layer_selection="weighted", normalize_layers=True)
    with torch.no_grad():
        frontend.layer_weights.copy_(torch.tensor(LOGITS))
        wavs, lens = batch()
        expected, expected_lens = frontend(wavs, lens)
    feats, feats_lens = FeatureExtractor(specs["learned"], upstream=frontend.upstream)(wavs, lens)
    assert torch.equal(feats_lens, expected_lens)
    assert torch.equal(feats, expected), "bit-identical to the weighted sum step 1 trained with"


@pytest.mark.parametrize("mode", ["learned", "single", "uniform", "mfcc"])
def test_a_batch_gives_each_utterances_features_run_alone(specs: dict[str, FeatureSpec], mode: str) -> None:
    extractor = FeatureExtractor(specs[mode])
    wavs, lens = batch(1)
    feats, feats_lens = extractor(wavs, lens)
    assert feats.shape[-1] == extractor.dim and feats_lens.tolist() == extractor.num_frames(lens).tolist()
    if mode == "mfcc":
        assert feats_lens.tolist() == [mfcc_num_frames(int(n)) for n in lens] == [49, 15, 38]  # Kaldi framing, every 2nd frame
    for i, n in enumerate(lens.tolist()):
        alone, alone_lens = extractor(wavs[i : i + 1, :n], lens[i : i + 1])
        torch.testing.assert_close(feats[i, : feats_lens[i]], alone[0], atol=1e-5, rtol=1e-5)
        assert not feats[i, feats_lens[i] :].any(), "padding frames are zero"


def test_weights_of_another_upstream_or_inconsistent_weights_are_rejected(tiny_upstream_info: dict,
                                                                         tmp_path: Path) -> None:
    other = {**tiny_upstream_info, "upstream": {**tiny_upstream_info["upstream"], "path": "/elsewhere"}}
    path = write_layer_weights(tmp_path / "w.json", other, LOGITS)
    with pytest.raises(DataError, match=r"w\.json: weights were learned on upstream"):
        FeatureSpec.learned(path, tiny_upstream_info)
    data = json.loads(path.read_text())
    data["weights"] = [1.0, 0.0, 0.0]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"w\.json: 'weights' is not the softmax of 'logits'"):
        FeatureSpec.learned(path)
    with pytest.raises(DataError, match="missing.json: cannot read layer weights"):
        FeatureSpec.learned(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="out of range"):
        FeatureSpec.parse("single:3", tiny_upstream_info)
    with pytest.raises(ValueError, match="features must be"):
        FeatureSpec.parse("weighted", tiny_upstream_info)
