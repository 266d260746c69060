"""Tiny inputs for the tokenizer tests: a 3-state SSL checkpoint and a data dir of short noisy tones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FS = 16000


@pytest.fixture(scope="session")
def tiny_upstream_info(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An ``upstream.json`` record of a tiny wav2vec2 (2 layers: 3 hidden states x 32 dims)."""
    from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint

    path = write_tiny_checkpoint("hf_wav2vec2_custom", tmp_path_factory.mktemp("ssl") / "model")
    return {"upstream": {"name": "hf_wav2vec2_custom", "path": str(path), "cache_dir": None},
            "sha256": "1" * 64, "num_hidden_states": 3, "hidden_size": 32, "frame_rate_hz": 50.0}


def write_layer_weights(path: Path, info: dict, logits: list[float], normalize_layers: bool = True) -> Path:
    """A step-1 ``layer_weights.json`` (README schema) over all hidden states of ``info``'s upstream."""
    w = np.exp(logits) / np.exp(logits).sum()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "weights": w.tolist(), "logits": logits, "layers": list(range(len(logits))),
        "normalize_layers": normalize_layers, "num_hidden_states": len(logits), "upstream": info["upstream"],
        "upstream_sha256": info["sha256"], "checkpoint": "exp/step1/valid.loss.ave.pth", "checkpoint_sha256": "2" * 64,
    }))
    return path


def write_data_dir(root: Path, n: int, seed: int = 0) -> Path:
    """A data dir of ``n`` utterances (0.1-1.2 s: tones with noise) with wav.scp and utt2num_samples."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    wav_scp, samples = [], []
    for i in range(n):
        length = int(rng.integers(1600, 19200))
        t = np.arange(length) / FS
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(length)
        path = root / f"utt{i:02d}.wav"
        sf.write(path, audio.astype(np.float32), FS)
        wav_scp.append(f"utt{i:02d} {path}\n")
        samples.append(f"utt{i:02d} {length}\n")
    (root / "wav.scp").write_text("".join(wav_scp))
    (root / "utt2num_samples").write_text("".join(samples))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/train`` with 9 utterances."""
    return write_data_dir(tmp_path_factory.mktemp("data") / "train", 9)
