"""Sharded dumping: features for k-means and units, the unit model, and the discrete-tokenizer frontend."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from espnet2_ext.data.datadir import read_wav
from espnet2_ext.frontend.discrete_tokenizer import PAD_UNIT, DiscreteTokenizerFrontend
from espnet2_ext.ssl.upstream import SSLUpstream
from espnet2_ext.tokenizer.bpe import read_units
from espnet2_ext.tokenizer.dump import (
    dump_features,
    dump_units,
    learning_subset,
    merge_units,
    open_features,
    sample_frames,
)
from espnet2_ext.tokenizer.features import FeatureExtractor, FeatureSpec
from espnet2_ext.tokenizer.kmeans import fit_kmeans
from espnet2_ext.tokenizer.unit_model import UnitModel
from espnet2_ext.tokenizer.unit_text import dedup, units_to_text
from espnet2_ext.utils.fileio import read_kaldi_text

from .conftest import write_layer_weights

K = 12


@contextlib.contextmanager
def counting_ssl_forwards() -> Iterator[list[int]]:
    """A list that gets an entry per :class:`SSLUpstream` forward call while the context is open."""
    forwards: list[int] = []
    original = SSLUpstream.forward

    def counted(self, *args, **kwargs):
        forwards.append(1)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SSLUpstream, "forward", counted)
        yield forwards


@pytest.fixture(scope="module", params=["learned", "single", "uniform", "mfcc"])
def system(request, tiny_upstream_info: dict, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A learned unit model per mode (features dumped in 2 shards, k-means), saved to disk."""
    root = tmp_path_factory.mktemp(request.param)
    weights = write_layer_weights(root / "layer_weights.json", tiny_upstream_info, [0.2, 1.0, -0.5])
    info = None if request.param == "mfcc" else tiny_upstream_info
    spec = FeatureSpec.parse(request.param, info, weights if request.param == "learned" else None)
    extractor = FeatureExtractor(spec)
    frames = [dump_features([(extractor, root / "feats")], tiny_data, 0.8, 0, j, 2) for j in (1, 2)]
    arrays = open_features(root / "feats")
    assert [len(a) for a in arrays] == frames and all(isinstance(a, np.memmap) for a in arrays)
    model = UnitModel(fit_kmeans(sample_frames(arrays, 10_000, 0), K, seed=0), spec, {"niter": 20})
    model.save(root / "model")
    return root, extractor, arrays


def test_features_cover_the_seeded_subset_once(system, tiny_data: Path) -> None:
    root, extractor, arrays = system
    ids = list(read_kaldi_text(tiny_data / "wav.scp"))
    subset = learning_subset(ids, 0.8, 0)
    assert len(subset) == 7 and subset == learning_subset(ids[::-1], 0.8, 0), "seeded, independent of the order"
    lengths = {**read_kaldi_text(root / "feats/lengths.1"), **read_kaldi_text(root / "feats/lengths.2")}
    assert sorted(lengths) == subset
    # shard 2's first utterance is the subset's second, and its features are the extractor's
    wav_scp, samples = read_kaldi_text(tiny_data / "wav.scp"), read_kaldi_text(tiny_data / "utt2num_samples")
    utt = subset[1]
    wav = torch.from_numpy(read_wav(wav_scp[utt], utt, int(samples[utt])))
    feats, _ = extractor(wav[None], torch.tensor([len(wav)]))
    np.testing.assert_array_equal(arrays[1][: int(lengths[utt])], feats[0].numpy())


def test_sample_frames_is_bounded_and_seeded(system) -> None:
    _, _, arrays = system
    total = sum(len(a) for a in arrays)
    a, b = sample_frames(arrays, 100, seed=3), sample_frames(arrays, 100, seed=3)
    assert a.shape == (100, arrays[0].shape[1]) and np.array_equal(a, b)
    assert not np.array_equal(a, sample_frames(arrays, 100, seed=4))
    assert len(sample_frames(arrays, total + 5, 0)) == total


def test_sharded_units_equal_unsharded_and_the_frontend(system, tiny_data: Path, tmp_path: Path) -> None:
    root, _, _ = system
    model = UnitModel.load(root / "model")
    extractor = FeatureExtractor(model.spec)
    dump_units([(model, extractor, tmp_path / "one")], tiny_data, 1, 1)
    for j in (1, 2, 3):
        dump_units([(model, extractor, tmp_path / "three")], tiny_data, j, 3)
    merge_units(tmp_path / "one", 1, tiny_data)
    merge_units(tmp_path / "three", 3, tiny_data)
    assert (tmp_path / "one/units").read_text() == (tmp_path / "three/units").read_text()
    units = read_units(tmp_path / "one/units")
    assert all(0 <= u < K for seq in units.values() for u in seq)

    # the frontend: raw audio of the whole set in one padded batch -> the same units
    frontend = DiscreteTokenizerFrontend(str(root / "model"))
    wav_scp = read_kaldi_text(tiny_data / "wav.scp")
    wavs = [torch.from_numpy(read_wav(p, u)) for u, p in wav_scp.items()]
    lens = torch.tensor([len(w) for w in wavs])
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    out, out_lens = frontend(padded, lens)
    for row, utt in enumerate(wav_scp):
        assert out[row, : out_lens[row]].tolist() == units[utt], utt
        assert (out[row, out_lens[row] :] == PAD_UNIT).all()
    assert frontend.unit_strings(padded, lens) == [units_to_text(dedup(units[u])) for u in wav_scp]
    assert frontend.output_size() == K and not frontend.state_dict(), "nothing of the tokenizer is saved"


def test_same_seed_same_units(system) -> None:
    _, _, arrays = system
    x = sample_frames(arrays, 10_000, 0)
    assert np.array_equal(fit_kmeans(x, K, seed=5), fit_kmeans(x, K, seed=5))


def test_sklearn_export_labels_like_our_assignment(system, tmp_path: Path) -> None:
    root, _, arrays = system
    model = UnitModel.load(root / "model")
    km = joblib.load(model.export_sklearn(tmp_path / f"km_{K}.mdl"))
    x = np.asarray(arrays[0][:300])
    np.testing.assert_array_equal(km.predict(x), model.assign(x))
    np.testing.assert_array_equal(km.cluster_centers_, model.centroids)


def test_systems_on_one_ssl_model_share_its_forward_and_get_their_own_units(
    tiny_upstream_info: dict, tiny_data: Path, tmp_path: Path
) -> None:
    from espnet2_ext.bin import units

    weights = write_layer_weights(tmp_path / "layer_weights.json", tiny_upstream_info, [0.2, 1.0, -0.5])
    rng = np.random.default_rng(0)
    for mode in ("learned", "single", "uniform"):
        spec = FeatureSpec.parse(mode, tiny_upstream_info, weights if mode == "learned" else None)
        centroids = rng.standard_normal((K, 32)).astype(np.float32)
        UnitModel(centroids, spec, {}).save(tmp_path / "exp/kmeans" / mode)
        (tmp_path / "exp/kmeans" / mode / "feature_spec.json").write_text(json.dumps(spec.to_dict()))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train").symlink_to(tiny_data)
    def dump(modes: tuple[str, ...], out: str) -> int:
        argv = ["dump_units", "--data_root", str(tmp_path / "data"), "--sets", "train", "--shard", "1", "--nshard", "1"]
        for mode in modes:
            argv += ["--model_dir", str(tmp_path / "exp/kmeans" / mode), "--out_root", str(tmp_path / out / mode)]
        with counting_ssl_forwards() as forwards:
            assert units.main(argv) == 0
        return len(forwards)

    utts = len(read_kaldi_text(tiny_data / "wav.scp"))
    assert dump(("learned", "single", "uniform"), "shared") == utts, "one SSL forward per utterance for 3 systems"
    for mode in ("learned", "single", "uniform"):
        assert dump((mode,), "alone") == utts
        shared = (tmp_path / "shared" / mode / "train/split/units.1").read_text()
        assert shared == (tmp_path / "alone" / mode / "train/split/units.1").read_text(), mode
    assert len({(tmp_path / "shared" / m / "train/split/units.1").read_text() for m in ("learned", "single")}) == 2

    # the systems of one job must share the SSL model: MFCC units go in a job of their own
    UnitModel(rng.standard_normal((K, 39)).astype(np.float32), FeatureSpec("mfcc"), {}).save(tmp_path / "exp/kmeans/m")
    (tmp_path / "exp/kmeans/m/feature_spec.json").write_text(json.dumps(FeatureSpec("mfcc").to_dict()))
    argv = ["dump_units", "--data_root", str(tmp_path / "data"), "--sets", "train", "--shard", "1", "--nshard", "1"]
    for mode in ("single", "m"):
        argv += ["--model_dir", str(tmp_path / "exp/kmeans" / mode), "--out_root", str(tmp_path / "mixed" / mode)]
    assert units.main(argv) == 1
    groups = subprocess.run([sys.executable, "-m", "espnet2_ext.bin.units", "groups", "--workdir", str(tmp_path),
                             "--systems", "single m learned uniform"], capture_output=True, text=True, check=True)
    assert groups.stdout.splitlines() == ["single learned uniform", "m"]


def test_feature_dumps_of_systems_on_one_ssl_model_share_its_forward(
    tiny_upstream_info: dict, tiny_data: Path, tmp_path: Path
) -> None:
    from espnet2_ext.bin import units

    weights = write_layer_weights(tmp_path / "layer_weights.json", tiny_upstream_info, [0.2, 1.0, -0.5])
    config = tmp_path / "units.yaml"
    config.write_text("k: 4\nportion: 0.8\nseed: 0\nsystems:\n"
                      "  learned: {upstream: ssl, features: learned, weights: w}\n"
                      "  single: {upstream: ssl, features: single}\n"
                      "  other_subset: {upstream: ssl, features: uniform, portion: 0.5}\n")
    for mode, features in (("learned", "learned"), ("single", "single"), ("other_subset", "uniform")):
        spec = FeatureSpec.parse(features, tiny_upstream_info, weights if mode == "learned" else None)
        (tmp_path / "exp/kmeans" / mode).mkdir(parents=True)
        (tmp_path / "exp/kmeans" / mode / "feature_spec.json").write_text(json.dumps(spec.to_dict()))
    def dump(systems: tuple[str, ...], workdir: Path) -> int:
        argv = ["dump_feats", "--units_config", str(config), "--workdir", str(workdir), "--data_dir", str(tiny_data),
                "--shard", "1", "--nshard", "1"] + [a for s in systems for a in ("--system", s)]
        with counting_ssl_forwards() as forwards:
            code = units.main(argv)
        return len(forwards) if code == 0 else -1

    subset = len(learning_subset(list(read_kaldi_text(tiny_data / "wav.scp")), 0.8, 0))
    assert dump(("learned", "single"), tmp_path) == subset, "one SSL forward per utterance for both systems"
    assert dump(("learned", "single"), tmp_path) == 0, "a rerun finds both shards done"
    alone = tmp_path / "alone"
    shutil.copytree(tmp_path / "exp", alone / "exp", ignore=shutil.ignore_patterns("feats"))
    for mode in ("learned", "single"):
        assert dump((mode,), alone) == subset
        shared, single = open_features(tmp_path / f"exp/kmeans/{mode}/feats"), open_features(alone / f"exp/kmeans/{mode}/feats")
        np.testing.assert_array_equal(shared[0], single[0])
        assert (tmp_path / f"exp/kmeans/{mode}/feats/lengths.1").read_text() == (
            alone / f"exp/kmeans/{mode}/feats/lengths.1").read_text()

    # another k-means subset is another pass: a group of its own, and an error in one job
    assert dump(("single", "other_subset"), tmp_path) == -1
    groups = subprocess.run([sys.executable, "-m", "espnet2_ext.bin.units", "groups", "--learning", "--units_config",
                             str(config), "--workdir", str(tmp_path), "--systems", "single other_subset learned"],
                            capture_output=True, text=True, check=True)
    assert groups.stdout.splitlines() == ["single learned", "other_subset"]
