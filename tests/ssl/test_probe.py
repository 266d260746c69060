"""Layer probe: k-means, feature extraction, a head that can learn, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from espnet2_ext.scoring.cer import score_set
from espnet2_ext.ssl.probe import (
    FrameSeqs,
    ProbeConfig,
    extract_features,
    greedy_decode,
    mfcc_features,
    parse_layers,
    train_probe,
)
from espnet2_ext.tokenizer import assign, fit_kmeans
from espnet2_ext.utils.fileio import write_kaldi_text


@pytest.fixture(autouse=True)
def one_thread():
    """The probes are tiny: one thread is faster than two fighting other jobs on a small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TEXTS = ["ab", "ba", "abc", "cab", "a b", "bca", "ac b", "cb", "ba c", "abc a", "ca", "b ac"]


# ------------------------------------------------------------------------ k-means
def test_fit_kmeans_recovers_separable_clusters() -> None:
    rng = np.random.default_rng(0)
    centers = 10.0 * rng.standard_normal((6, 8)).astype(np.float32)
    truth = rng.integers(0, 6, 3000)
    x = centers[truth] + 0.1 * rng.standard_normal((3000, 8)).astype(np.float32)
    centroids = fit_kmeans(x, 6, seed=1)
    units = assign(x, centroids)
    assert centroids.shape == (6, 8) and centroids.dtype == np.float32
    assert units.shape == (3000,) and units.dtype == np.int64
    # every true cluster is exactly one unit, and each unit's centroid sits on its cluster centre
    mapping = {t: set(units[truth == t].tolist()) for t in range(6)}
    assert all(len(u) == 1 for u in mapping.values())
    assert len({u.pop() for u in mapping.values()}) == 6
    for t in range(6):
        assert np.abs(centroids[units[truth == t][0]] - centers[t]).max() < 0.1
    np.testing.assert_array_equal(centroids, fit_kmeans(x, 6, seed=1))  # seeded: reproducible


def test_fit_kmeans_needs_at_least_k_frames() -> None:
    with pytest.raises(ValueError, match=r"k=10 .*N=5"):
        fit_kmeans(np.zeros((5, 3), np.float32), 10)
    with pytest.raises(ValueError, match="dims"):
        assign(np.zeros((5, 3), np.float32), np.zeros((2, 4), np.float32))


# ------------------------------------------------------------------------ the head can learn
def _toy(rng: np.random.Generator, n: int, alphabet: str, informative: bool) -> tuple[FrameSeqs, list[str]]:
    """Unit i spells letter i for 1-3 frames, unit len(alphabet) separates letters (or random units)."""
    seqs, texts = [], []
    for _ in range(n):
        text = "".join(rng.choice(list(alphabet), rng.integers(3, 7)))
        units: list[int] = []
        for c in text:
            units += [alphabet.index(c)] * int(rng.integers(1, 4)) + [len(alphabet)]
        seq = np.array(units, dtype=np.int64)
        seqs.append(seq if informative else rng.integers(0, len(alphabet) + 1, len(seq)))
        texts.append(text)
    return FrameSeqs.from_list(seqs), texts


@pytest.mark.parametrize("informative", [True, False])
def test_unit_probe_learns_characters_only_from_informative_units(informative: bool) -> None:
    alphabet = "abcdefgh"
    rng = np.random.default_rng(0)
    train, train_texts = _toy(rng, 100, alphabet, informative)
    test, test_texts = _toy(rng, 30, alphabet, informative)
    chars = sorted(alphabet.upper())
    targets = [[chars.index(c) + 1 for c in t.upper()] for t in train_texts]
    config = ProbeConfig(batch_frames=300, lr=3e-3, warmup_steps=20)
    head, stats = train_probe(train, targets, len(chars) + 1, 10, config, num_units=len(alphabet) + 1)
    hyps = greedy_decode(head, test, chars, config.batch_frames)
    ids = [f"u{i}" for i in range(len(test))]
    cer = score_set(dict(zip(ids, test_texts)), dict(zip(ids, hyps))).total.cer
    assert stats["steps"] > 0 and stats["infeasible_utts"] == 0
    if informative:
        assert cer < 0.2, hyps[:3]
    else:  # units that carry no information about the text: the probe cannot do it
        assert cer > 0.5, hyps[:3]


def test_parse_layers() -> None:
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("2,0", 3) == [0, 2]
    with pytest.raises(ValueError, match=r"states 0\.\.2"):
        parse_layers([3], 3)


# ------------------------------------------------------------------------ features and the CLI
def _write_set(root: Path, name: str, texts: list[str], rng: np.random.Generator) -> Path:
    d = root / name
    d.mkdir(parents=True)
    wav_scp, text = [], []
    for i, t in enumerate(texts):
        utt = f"{name}_eng_{i:03d}"
        n = int(16000 * rng.uniform(0.4, 0.9))
        tone = np.sin(2 * np.pi * rng.uniform(150, 400) * np.arange(n) / 16000)
        audio = 0.3 * tone + 0.05 * rng.standard_normal(n)
        sf.write(d / f"{utt}.wav", audio.astype(np.float32), 16000)
        wav_scp.append((utt, str(d / f"{utt}.wav")))
        text.append((utt, f"[eng] {t}"))
    write_kaldi_text(d / "wav.scp", wav_scp)
    write_kaldi_text(d / "text", text)
    return d


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny hf_wav2vec2_custom checkpoint of conftest's ``tiny_ssl_checkpoints``, built alone:
    that fixture builds every format (importing ESPnet, ~20 s), this file needs one."""
    from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint

    return write_tiny_checkpoint("hf_wav2vec2_custom", tmp_path_factory.mktemp("probe_ssl") / "hf_wav2vec2")


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("probe_data")
    rng = np.random.default_rng(0)
    return _write_set(root, "train", TEXTS[:8], rng), _write_set(root, "test", TEXTS[8:], rng)


def test_features_match_the_upstream_run_alone(tiny_wav2vec2: Path, tiny_sets) -> None:
    from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec

    upstream = SSLUpstream(UpstreamSpec.from_path(tiny_wav2vec2))
    train_dir, _ = tiny_sets
    feats = extract_features(upstream, train_dir, [0, 2], batch_seconds=2.0)
    assert sorted(feats.states) == [0, 2] and len(feats.utt_ids) == 8
    for i in (0, 5):
        audio, _ = sf.read(train_dir / f"{feats.utt_ids[i]}.wav", dtype="float32")
        states, lens = upstream(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
        for layer in (0, 2):
            stored = feats.states[layer][i]
            assert stored.dtype == np.float16 and len(stored) == int(lens[0])
            np.testing.assert_allclose(stored.astype(np.float32), states[layer][0].numpy(), atol=2e-2, rtol=1e-2)
        np.testing.assert_array_equal(feats.mfcc[i], mfcc_features(audio))
        assert abs(len(feats.mfcc[i]) - int(lens[0])) <= 1  # MFCC frames at the SSL rate (20 ms)
    assert feats.mfcc.data.shape[1] == 39


def test_probe_cli_writes_a_cer_for_every_hidden_state_and_mfcc_units(
    tiny_wav2vec2: Path, tiny_sets, tmp_path: Path
) -> None:
    from espnet2_ext.bin.ssl_model import main

    train_dir, test_dir = tiny_sets
    upstream_json = tmp_path / "upstream.json"
    spec = {"name": "hf_wav2vec2_custom", "path": str(tiny_wav2vec2), "cache_dir": None}
    upstream_json.write_text(json.dumps({"upstream": spec}))
    out = tmp_path / "exp" / "probe.json"
    argv = ["probe", "--upstream_json", str(upstream_json), "--train_dir", str(train_dir), "--test_dir",
            str(test_dir), "--out", str(out), "--epochs", "2", "--mfcc_k", "4"]
    assert main(argv) == 0

    result = json.loads(out.read_text())
    states = result["upstream"]["num_hidden_states"]
    rows = result["results"]
    assert [r["layer"] for r in rows] == [*range(states), None]
    assert rows[-1]["input"] == "mfcc_units" and result["mfcc_units_cer"] == rows[-1]["cer"]
    assert all(isinstance(r["cer"], float) and r["ref_len"] > 0 for r in rows)
    assert result["best"]["cer"] == min(r["cer"] for r in rows[:-1])
    assert result["data"]["characters"] == " ABC" and result["data"]["train_utts"] == 8
    table = out.with_suffix(".md").read_text()
    assert "| hidden state | CER % |" in table and "MFCC k-means units (K=4)" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + states + 1

    # errors name the file: a missing upstream.json is a clean exit 1, not a traceback
    assert main(["probe", "--upstream_json", str(tmp_path / "missing.json"), *argv[3:]]) == 1
