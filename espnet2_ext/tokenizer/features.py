"""The one feature spec behind every unit system: which frame features k-means sees.

A :class:`FeatureSpec` says how a waveform becomes a (frames, D) feature sequence, in one of four
modes (METHOD.md section 1, step 2; section 2 for the baseline):

* ``learned`` -- the two-step method: ``sum_i softmax(logits)_i * h_i`` over the hidden states
  ``layers`` of the upstream, the logits read from step 1's ``layer_weights.json`` (its
  ``normalize_layers`` applies: each state is layer-normed, no affine, before the sum). The sum is
  computed exactly as :class:`~espnet2_ext.frontend.ssl_frontend.SSLFrontend` computes it.
* ``single`` -- the challenge baseline: one hidden state (``single:<L>``, negative counts from the
  top; plain ``single`` takes the baseline's relative depth, transformer layer 21 of 24, as
  ``round(21 / 24 * (S - 1))`` for S hidden states: 21 for XLS-R 300M, 7 for the demo model).
* ``uniform`` -- all hidden states with equal weights (step 1's initial weights).
* ``mfcc`` -- MFCC + deltas + delta-deltas at 20 ms (:func:`mfcc_features`), no SSL model: the
  reference row of the results table.

:class:`FeatureExtractor` turns a spec into a module ``(wavs, wav_lens) -> (feats, feats_lens)``.
k-means feature dumping, unit dumping and the discrete-tokenizer frontend all go through it, so
they compute the same features by construction.

Example:
    >>> spec = FeatureSpec.single({"name": "hf_wav2vec2_custom", "path": "m"}, 9)   # doctest: +SKIP
    >>> spec.layers                                                                 # doctest: +SKIP
    (7,)
    >>> feats, lens = FeatureExtractor(spec)(wavs, wav_lens)                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from espnet2_ext.ssl.upstream import SAMPLE_RATE, SSLUpstream, UpstreamSpec
from espnet2_ext.utils.fileio import DataError

MODES = ("learned", "single", "uniform", "mfcc")
MFCC_DIM = 39
MFCC_FRAME_RATE_HZ = 50.0
BASELINE_RELATIVE_DEPTH = 21 / 24  # the challenge baseline: WavLM-large layer 21 of 24
_MFCC_WINDOW = 400  # one 25 ms window at 16 kHz
_MFCC_HOP = 160  # 10 ms


def mfcc_features(wav: np.ndarray) -> np.ndarray:
    """MFCC + deltas + delta-deltas at 20 ms frames.

    ``torchaudio.compliance.kaldi.mfcc`` with Kaldi defaults (25 ms window, 10 ms hop, 23 mel bins,
    13 coefficients, ``use_energy=False``, no dither), deltas and delta-deltas (39 dims at 100 Hz,
    as in HuBERT's first iteration), then every 2nd frame: the SSL frame rate.

    Args:
        wav: (T,) float waveform at 16 kHz; shorter than 25 ms is zero-padded to one window.

    Returns:
        (:func:`mfcc_num_frames` (T), 39) float32.
    """
    import torchaudio

    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))
    x = nn.functional.pad(x, (0, max(0, _MFCC_WINDOW - len(x))))
    mfcc = torchaudio.compliance.kaldi.mfcc(x[None], sample_frequency=SAMPLE_RATE, use_energy=False).T  # (13, F)
    deltas = torchaudio.functional.compute_deltas(mfcc)
    feats = torch.cat([mfcc, deltas, torchaudio.functional.compute_deltas(deltas)]).T  # (F, 39)
    return feats[::2].numpy().astype(np.float32)


def mfcc_num_frames(num_samples: int) -> int:
    """Frames :func:`mfcc_features` returns for ``num_samples`` samples: ceil(F / 2), Kaldi's F."""
    frames = 1 + (max(num_samples, _MFCC_WINDOW) - _MFCC_WINDOW) // _MFCC_HOP
    return (frames + 1) // 2


def baseline_layer(num_hidden_states: int) -> int:
    """The challenge baseline's hidden state at the same relative depth: round(21/24 * (S - 1))."""
    return round(BASELINE_RELATIVE_DEPTH * (num_hidden_states - 1))


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How frame features are computed; JSON-ready via :meth:`to_dict`.

    Attributes:
        mode: ``learned``, ``single``, ``uniform`` or ``mfcc``.
        upstream: the SSL model as ``{"name", "path", "cache_dir"}``; None for ``mfcc``.
        num_hidden_states: S of the upstream (0 for ``mfcc``).
        layers: hidden states combined (one for ``single``; empty for ``mfcc``).
        logits: softmax logits, one per entry of ``layers`` (``learned``; zeros for ``uniform``;
            empty otherwise).
        normalize_layers: layer-norm (no affine) every selected state before combining.
        source: provenance (upstream SHA-256, the layer_weights.json and checkpoint it came from).
    """

    mode: str
    upstream: Mapping[str, str | None] | None = None
    num_hidden_states: int = 0
    layers: tuple[int, ...] = ()
    logits: tuple[float, ...] = ()
    normalize_layers: bool = False
    source: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "logits", tuple(float(w) for w in self.logits))
        if self.mode not in MODES:
            raise ValueError(f"feature mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "mfcc":
            if self.upstream is not None or self.layers:
                raise ValueError("feature mode 'mfcc' takes no upstream and no layers")
            return
        if self.upstream is None:
            raise ValueError(f"feature mode {self.mode!r} needs an upstream")
        UpstreamSpec.from_dict(self.upstream)  # validates the dict
        s = self.num_hidden_states
        if not self.layers or any(not 0 <= i < s for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {list(self.layers)} must be distinct hidden states in [0, {s})")
        if self.mode == "single" and len(self.layers) != 1:
            raise ValueError(f"feature mode 'single' takes one hidden state, got {list(self.layers)}")
        weighted = self.mode in ("learned", "uniform")
        if weighted and len(self.logits) != len(self.layers):
            raise ValueError(f"{len(self.logits)} logits for {len(self.layers)} layers; need one per layer")
        if not weighted and self.logits:
            raise ValueError(f"feature mode {self.mode!r} takes no logits")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def single(cls, upstream: Mapping, num_hidden_states: int, layer: int | None = None, **kw) -> FeatureSpec:
        """One hidden state; ``layer=None`` is the baseline depth (:func:`baseline_layer`)."""
        if layer is None:
            layer = baseline_layer(num_hidden_states)
        if not -num_hidden_states <= layer < num_hidden_states:
            raise ValueError(f"hidden state {layer} out of range: the upstream has {num_hidden_states} states")
        return cls("single", dict(upstream), num_hidden_states, (layer % num_hidden_states,), **kw)

    @classmethod
    def uniform(cls, upstream: Mapping, num_hidden_states: int, **kw) -> FeatureSpec:
        """Equal weights over all hidden states (zero logits, step 1's initial weights)."""
        s = num_hidden_states
        return cls("uniform", dict(upstream), s, tuple(range(s)), (0.0,) * s, **kw)

    @classmethod
    def learned(cls, layer_weights_json: str | Path, upstream_info: Mapping | None = None) -> FeatureSpec:
        """Step 1's learned weights from ``layer_weights.json`` (schema: README, step 1).

        Args:
            layer_weights_json: the file step 1 wrote.
            upstream_info: the ``upstream.json`` record the features are computed with; its
                upstream and SHA-256 must be the ones the weights were learned on.

        Raises:
            DataError: the file is missing or malformed, its ``weights`` disagree with
                ``softmax(logits)`` (:meth:`LayerWeights.read`), or it was learned on another upstream.
        """
        from espnet2_ext.frontend.layer_weights import LayerWeights

        path = Path(layer_weights_json)
        lw = LayerWeights.read(path)  # checks the file, its keys and weights == softmax(logits)
        if upstream_info is not None:
            if dict(upstream_info["upstream"]) != dict(lw.upstream):
                raise DataError(f"{path}: weights were learned on upstream {lw.upstream}, not on "
                                f"{upstream_info['upstream']}; point the unit system at the matching upstream")
            if lw.upstream_sha256 and upstream_info.get("sha256") and lw.upstream_sha256 != upstream_info["sha256"]:
                raise DataError(f"{path}: weights were learned on a checkpoint with sha256 {lw.upstream_sha256[:12]}, "
                                f"the upstream now has {upstream_info['sha256'][:12]}; rerun step 1")
        source = {"layer_weights": str(path), "upstream_sha256": lw.upstream_sha256, "checkpoint": lw.checkpoint,
                  "checkpoint_sha256": lw.checkpoint_sha256}
        return cls("learned", dict(lw.upstream), lw.num_hidden_states, tuple(lw.layers), tuple(lw.logits),
                   bool(lw.normalize_layers), source)

    @classmethod
    def parse(cls, features: str, upstream_info: Mapping | None, layer_weights_json: str | Path | None = None,
              normalize_layers: bool = False) -> FeatureSpec:
        """Build from a unit-system config value: ``learned``, ``single[:<L>]``, ``uniform`` or ``mfcc``.

        Args:
            features: the mode string.
            upstream_info: the ``upstream.json`` record (None only for ``mfcc``).
            layer_weights_json: step 1's weights (``learned`` only).
            normalize_layers: for ``single`` and ``uniform`` (``learned`` takes step 1's).
        """
        mode, _, arg = features.partition(":")
        if mode == "mfcc" and not arg:
            return cls("mfcc")
        if mode not in MODES:
            raise ValueError(f"features must be learned, single, single:<L>, uniform or mfcc, got {features!r}")
        if upstream_info is None:
            raise ValueError(f"features {features!r} need an upstream")
        if mode == "learned" and not arg:
            if layer_weights_json is None:
                raise ValueError("features 'learned' need the layer_weights.json of a step-1 run ('weights')")
            return cls.learned(layer_weights_json, upstream_info)
        common = {"normalize_layers": normalize_layers, "source": {"upstream_sha256": upstream_info.get("sha256")}}
        upstream, s = upstream_info["upstream"], int(upstream_info["num_hidden_states"])
        if mode == "uniform" and not arg:
            return cls.uniform(upstream, s, **common)
        if mode == "single":
            try:
                layer = int(arg) if arg else None
            except ValueError:
                raise ValueError(f"single:<L> needs an integer hidden state, got {features!r}") from None
            return cls.single(upstream, s, layer, **common)
        raise ValueError(f"features {features!r}: only 'single' takes an argument (single:<L>)")

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["layers"], d["logits"] = list(self.layers), list(self.logits)
        d["upstream"] = None if self.upstream is None else dict(self.upstream)
        d["source"] = dict(self.source)
        d["weights"] = self.weights().tolist()
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureSpec:
        """Inverse of :meth:`to_dict` (the derived ``weights`` key is ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields - {"weights"}
        if unknown:
            raise ValueError(f"unknown feature-spec key(s) {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in fields})

    def weights(self) -> np.ndarray:
        """(S,) weight of every hidden state in the features (empty for ``mfcc``)."""
        full = np.zeros(self.num_hidden_states)
        if self.mode == "single":
            full[self.layers[0]] = 1.0
        elif self.mode in ("learned", "uniform"):
            full[list(self.layers)] = self.softmax().numpy()
        return full

    def softmax(self) -> torch.Tensor:
        """(len(layers),) float32 weights, softmax of the logits as step 1's frontend computes it."""
        return torch.softmax(torch.tensor(self.logits, dtype=torch.float32), dim=0)

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.mode == "mfcc":
            return "MFCC 39 dims (13 + deltas + delta-deltas), 20 ms"
        up = self.upstream["name"] + (f" {self.upstream['path']}" if self.upstream.get("path") else "")
        norm = ", layer-normed" if self.normalize_layers else ""
        if self.mode == "single":
            return f"hidden state {self.layers[0]} of {self.num_hidden_states} of {up}{norm}"
        w = self.weights()
        top = np.argsort(-w)[:3]
        return f"{self.mode} weights over {len(self.layers)} states of {up}{norm} (top: " + ", ".join(
            f"{i}:{w[i]:.2f}" for i in top) + ")"


class FeatureExtractor(nn.Module):
    """A :class:`FeatureSpec` as a module: padded waveforms in, padded features out.

    Args:
        spec: the features to compute.
        upstream: an already loaded frozen upstream for ``spec.upstream`` (loaded when None).

    Example:
        >>> extractor = FeatureExtractor(FeatureSpec("mfcc"))
        >>> feats, lens = extractor(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
        >>> feats.shape, lens.tolist()
        (torch.Size([2, 49, 39]), [49, 24])
    """

    def __init__(self, spec: FeatureSpec, upstream: SSLUpstream | None = None) -> None:
        super().__init__()
        self.spec = spec
        if spec.mode == "mfcc":
            self.upstream = None
            return
        self.upstream = upstream or SSLUpstream(UpstreamSpec.from_dict(spec.upstream), frozen=True)
        if self.upstream.num_hidden_states != spec.num_hidden_states:
            raise ValueError(f"the feature spec expects {spec.num_hidden_states} hidden states, upstream "
                             f"{spec.upstream['name']} has {self.upstream.num_hidden_states}")
        self.register_buffer("layer_weights", spec.softmax() if spec.logits else torch.ones(1), persistent=False)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return MFCC_DIM if self.upstream is None else self.upstream.hidden_size

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second of audio (50 for wav2vec2-family models and for the MFCC features)."""
        return MFCC_FRAME_RATE_HZ if self.upstream is None else self.upstream.frame_rate_hz

    def num_frames(self, wav_lens: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(B,) long frame counts for (B,) lengths in samples."""
        wav_lens = torch.as_tensor(wav_lens, dtype=torch.long)
        if self.upstream is None:
            return torch.tensor([mfcc_num_frames(int(n)) for n in wav_lens], dtype=torch.long)
        return self.upstream.num_frames(wav_lens)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a padded batch.

        Args:
            wavs: (B, T) float waveforms at 16 kHz.
            wav_lens: (B,) lengths in samples.

        Returns:
            feats: (B, F, D) float32, F = max(feats_lens); frames past a length are zero.
            feats_lens: (B,) long frames per utterance.
        """
        if self.upstream is None:
            seqs = [torch.from_numpy(mfcc_features(w[: int(n)].cpu().numpy())) for w, n in zip(wavs, wav_lens)]
            lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            return nn.utils.rnn.pad_sequence(seqs, batch_first=True).to(wavs.device), lens.to(wavs.device)
        return self.combine(*self.upstream(wavs, wav_lens))

    @torch.no_grad()
    def combine(self, states: Sequence[torch.Tensor], lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features from hidden states the upstream already computed (several specs, one SSL pass).

        Args:
            states: S hidden states of ``self.upstream``, each (B, F, D).
            lens: (B,) frames per utterance.

        Returns:
            As :meth:`forward`.
        """
        selected = [states[i] for i in self.spec.layers]
        if self.spec.normalize_layers:
            selected = [nn.functional.layer_norm(h, h.shape[-1:]) for h in selected]
        if self.spec.mode == "single":
            feats = selected[0]
        else:  # the same order of operations as SSLFrontend.forward
            weights = self.layer_weights.to(selected[0].dtype)
            feats = weights[0] * selected[0]
            for weight, h in zip(weights[1:], selected[1:]):
                feats = feats + weight * h
        pad = torch.arange(feats.size(1), device=feats.device)[None, :] >= lens[:, None]
        return feats.float().masked_fill(pad[..., None], 0.0), lens


def _read_json(path: Path, hint: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found; {hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def read_upstream_json(path: str | Path) -> dict:
    """An ``upstream.json`` record (stage 3 / 4), checked for the keys the tokenizer needs."""
    path = Path(path)
    info = _read_json(path, "run the stage that writes it (3: exp/ssl, 4: exp/step0) first")
    if not isinstance(info.get("upstream"), dict) or "num_hidden_states" not in info:
        raise DataError(f"{path}: expected 'upstream' and 'num_hidden_states' (written by 'ssl_model check')")
    return info


__all__ = ["FeatureExtractor", "FeatureSpec", "MODES", "baseline_layer", "mfcc_features", "mfcc_num_frames",
           "read_upstream_json"]
