"""Tiny SSL checkpoints of every local format, built once per test session (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Checkpoint path per upstream name: a directory for the transformers and ESPnet formats.
_LAYOUT = {
    "hf_wav2vec2_custom": "hf_wav2vec2",
    "hf_hubert_custom": "hf_hubert",
    "hubert_local": "hubert.pt",
    "wav2vec2_local": "wav2vec2.pt",
    "wavlm_local": "wavlm.pt",
    "espnet_hubert_local": "espnet_hubert",
}


@pytest.fixture(scope="session")
def tiny_ssl_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Upstream name -> tiny checkpoint (2 layers, 32 dims, XLS-R-style layer-norm conv stack)."""
    from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_ssl")
    return {name: write_tiny_checkpoint(name, root / rel) for name, rel in _LAYOUT.items()}
