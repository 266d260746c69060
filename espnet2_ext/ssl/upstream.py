"""One loader for every SSL speech model the recipe uses: s3prl hub names and local checkpoints.

Every later stage (step-0 fine-tuning, the step-1 weighted-sum frontend, k-means feature
dumping) gets its hidden states from :class:`SSLUpstream`, which wraps
:class:`s3prl.nn.S3PRLUpstream` (the models themselves are s3prl's) and adds three guarantees:

* **Exact lengths.** Frames per utterance come from the model's own conv stack
  (``floor((L - k) / s) + 1`` per conv layer: 49 frames for 16000 samples). s3prl reports
  ``ceil(L / 320)`` instead (50) and fills the extra frame with a copy of the last one when the
  utterance runs alone, but with padded neighbours that frame sees padding; we drop it.
* **Padding never changes a frame.** Every frame of an utterance in a padded batch equals (up to
  float error) the frame of that utterance run alone. How, per s3prl expert:

  ===========================  =================================================================
  expert (upstream names)      path
  ===========================  =================================================================
  ``hf_wav2vec2`` /            batched: s3prl passes ``attention_mask``; transformers derives the
  ``hf_hubert`` (``hf_*``)     exact frame mask, zeroes padded frames before the positional conv
                               and masks attention.
  ``wav2vec2`` (``xls_r_*``,   batched: s3prl's wav2vec 2.0 derives the exact frame mask from the
  ``wav2vec2_local``)          conv formula.
  ``hubert`` (``hubert_*``,    batched after a fix: their ``forward_padding_mask`` approximates
  ``hubert_local``),           the frame mask by chunking samples and can leave a frame that
  ``wavlm`` (``wavlm_*``)      overlaps padding unmasked; we replace it on the model instance by
                               the exact conv-formula mask (:class:`_ExactFrameMask`).
  ``espnet_hubert``            batched: torchaudio computes exact lengths, zeroes padded frames
  (``espnet_hubert_local``)    and masks attention.
  any conv extractor with      per utterance: GroupNorm over time (wav2vec2-base / HuBERT-base
  ``GroupNorm``                style ``extractor_mode: default``) sees the padding, no mask helps.
  anything else                per utterance (not verified to mask padding).
  ===========================  =================================================================

  Per-utterance forwarding runs the model once per utterance and pads the outputs.
* **Offline by default.** Hub names only load from an already filled s3prl download dir; a
  missing file is a ``ValueError`` naming the expected file and the URL to fetch it from.

Hidden states: state 0 is the input of the first transformer layer (CNN features after
projection and positional conv), state ``i`` follows transformer layer ``i``; XLS-R 300M gives 25
states of 1024 dims at 50 frames per second. Exception: s3prl's ``espnet_hubert`` expert returns
only the transformer layer outputs (``num_hidden_states == num_layers``, state ``i`` follows
layer ``i + 1``).

Example:
    >>> spec = UpstreamSpec.from_path("exp/ssl/xlsr_ft")          # doctest: +SKIP
    >>> upstream = SSLUpstream(spec, frozen=True)                  # doctest: +SKIP
    >>> states, lens = upstream(wavs, wav_lens)                    # doctest: +SKIP
    >>> len(states), states[0].shape                               # doctest: +SKIP
    (25, torch.Size([2, 49, 1024]))
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""All s3prl upstreams take 16 kHz mono audio."""

LOCAL_UPSTREAMS = (
    "hubert_local",
    "wav2vec2_local",
    "wavlm_local",
    "hf_wav2vec2_custom",
    "hf_hubert_custom",
    "espnet_hubert_local",
)
"""Local-checkpoint upstreams this module can infer from a path (see :func:`infer_upstream_name`)."""

# s3prl's naming convention: these suffixes take a checkpoint path, other names are hub entries.
_PATH_SUFFIXES = ("_local", "_custom", "_url")
# S3PRLUpstream zero-pads a whole batch to this many samples (0.05 s) when it is shorter; we pad
# each short utterance ourselves so its input does not depend on its neighbours.
_MIN_SAMPLES = 800
_HF_NAMES = {"wav2vec2": "hf_wav2vec2_custom", "hubert": "hf_hubert_custom"}
_CONVERTED_KEYS = {"task_cfg", "model_cfg", "model_weight"}
# s3prl experts that hand the model a padding mask it turns into an exact frame mask.
_EXACT_MASK_EXPERTS = {
    "s3prl.upstream.wav2vec2.expert",
    "s3prl.upstream.hf_wav2vec2.expert",
    "s3prl.upstream.hf_hubert.expert",
    "s3prl.upstream.espnet_hubert.expert",
}
# s3prl experts whose model approximates the frame mask in ``forward_padding_mask``.
_CHUNKED_MASK_EXPERTS = {"s3prl.upstream.hubert.expert", "s3prl.upstream.wavlm.expert"}
_ESPNET_EXPERT = "s3prl.upstream.espnet_hubert.expert"
_ESPNET_PREFIX = "encoder.hubert_pretrain_model."


@dataclasses.dataclass(frozen=True)
class UpstreamSpec:
    """Which SSL model to load; stored in config.yaml / JSON as a plain dict.

    Attributes:
        name: an s3prl upstream name: a hub entry (``xls_r_300m``, ``xls_r_1b``, ``wavlm_large``,
            ``hubert_large_ll60k``, ...) or a local-checkpoint upstream (:data:`LOCAL_UPSTREAMS`).
        path: the checkpoint for local upstreams: a ``.pt`` file (``hubert_local``,
            ``wav2vec2_local``, ``wavlm_local``), a ``save_pretrained`` directory (``hf_*``), or an
            ESPnet ``.pth`` with ``config.yaml`` beside it / a directory holding both
            (``espnet_hubert_local``). Must be None for hub names.
        cache_dir: s3prl download dir for hub names (default: s3prl's ``~/.cache/s3prl/download``).

    Example:
        >>> UpstreamSpec("xls_r_300m", cache_dir="/data/s3prl").to_dict()
        {'name': 'xls_r_300m', 'path': None, 'cache_dir': '/data/s3prl'}
    """

    name: str
    path: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # Accept Path objects but store strings so the spec serialises as-is.
        for field in ("path", "cache_dir"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, os.fspath(value))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"UpstreamSpec.name must be a non-empty s3prl upstream name, got {self.name!r}")
        if self.takes_path and self.path is None:
            raise ValueError(f"upstream {self.name!r} loads a local checkpoint: set UpstreamSpec.path")
        if not self.takes_path and self.path is not None:
            raise ValueError(
                f"upstream {self.name!r} is an s3prl hub name and takes no path (got {self.path!r}); "
                f"for a local checkpoint use UpstreamSpec.from_path({self.path!r})"
            )

    @property
    def takes_path(self) -> bool:
        """Whether ``name`` is a local/URL upstream (``*_local``, ``*_custom``, ``*_url``)."""
        return self.name.endswith(_PATH_SUFFIXES)

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict for YAML/JSON: ``{"name", "path", "cache_dir"}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str | None]) -> UpstreamSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos must not pass silently)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown UpstreamSpec key(s) {sorted(unknown)}; expected name, path, cache_dir")
        if "name" not in data:
            raise ValueError(f"UpstreamSpec needs a 'name', got {dict(data)}")
        return cls(**data)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> UpstreamSpec:
        """Spec for a local checkpoint, with the upstream inferred by :func:`infer_upstream_name`."""
        return cls(infer_upstream_name(path), path=os.fspath(path))


def infer_upstream_name(path: str | os.PathLike) -> str:
    """Tell which s3prl local upstream reads the checkpoint at ``path``.

    * directory with ``config.json`` -> ``hf_wav2vec2_custom`` / ``hf_hubert_custom`` by its
      ``model_type``;
    * directory with ``config.yaml`` and a ``.pth``, or a ``.pth`` with ``config.yaml`` beside
      it -> ``espnet_hubert_local``;
    * a file: a dict with ``task_cfg``, ``model_cfg``, ``model_weight`` -> ``hubert_local`` if it
      also has ``dictionaries_symbols`` (s3prl's HuBERT loader requires them), else
      ``wav2vec2_local``; a dict ``{cfg, model}`` with a flat WavLM config -> ``wavlm_local``.

    Raises:
        ValueError: the path is missing or is none of the above (e.g. a raw fairseq checkpoint).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: SSL checkpoint not found; give an existing file or directory")
    if path.is_dir():
        if (path / "config.json").is_file():
            model_type = _read_json(path / "config.json").get("model_type")
            if model_type not in _HF_NAMES:
                raise ValueError(
                    f"{path}/config.json: model_type {model_type!r} is not supported; s3prl loads "
                    f"transformers directories of model_type {sorted(_HF_NAMES)}"
                )
            return _HF_NAMES[model_type]
        if (path / "config.yaml").is_file() and any(path.glob("*.pth")):
            return "espnet_hubert_local"
        raise ValueError(
            f"{path}: unrecognised checkpoint directory; expected a transformers save_pretrained directory "
            "(config.json) or an ESPnet HuBERT directory (config.yaml + *.pth)"
        )
    if path.suffix == ".pth" and (path.parent / "config.yaml").is_file():
        return "espnet_hubert_local"
    state = _load_state(path)
    keys = set(state)
    if keys >= _CONVERTED_KEYS:
        return "hubert_local" if "dictionaries_symbols" in keys else "wav2vec2_local"
    cfg = state.get("cfg")
    if "model" in keys and isinstance(cfg, dict) and "encoder_layers" in cfg:
        return "wavlm_local"
    raise ValueError(
        f"{path}: unknown checkpoint layout (top-level keys {sorted(map(str, keys))[:8]}); expected s3prl's "
        "converted format {task_cfg, model_cfg, model_weight[, dictionaries_symbols]}. A raw fairseq checkpoint "
        "must first be converted with s3prl.upstream.{hubert,wav2vec2}.convert (needs fairseq), or name the "
        "upstream explicitly in UpstreamSpec"
    )


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, or a stable digest of a directory's files.

    A file hashes to the same digest as ``sha256sum``. A directory hashes the sorted list of
    ``relative/path<TAB>sha256`` lines of its regular files (hidden names skipped), so it does not
    depend on timestamps or the order the file system lists them in.
    """
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file() and not _is_hidden(f.relative_to(path))]
        return _files_sha256(path, files)
    raise ValueError(f"{path}: cannot hash a missing checkpoint")


class SSLUpstream(nn.Module):
    """All hidden states of an s3prl SSL upstream, with exact lengths and padding-safe batching.

    Args:
        spec: which model to load (:class:`UpstreamSpec`).
        frozen: True: parameters get ``requires_grad=False``, forward runs under ``no_grad``
            and :meth:`train` keeps the model in eval mode (ESPnet's trainer calls
            ``model.train()`` on everything, which would otherwise turn dropout back on).
            False (step-0 fine-tuning): the transformer is trainable; the conv feature extractor
            stays frozen, as in wav2vec 2.0 / XLS-R fine-tuning (s3prl's own experts never pass
            gradients to it anyway).
        allow_download: let s3prl download hub checkpoints (only on a machine with network).

    Raises:
        ValueError: missing path, unreadable or unknown checkpoint, unknown upstream name, or a hub
            checkpoint not in the cache while downloads are off.

    Example:
        >>> up = SSLUpstream(UpstreamSpec("hubert_local", path="tiny.pt"))   # doctest: +SKIP
        >>> states, lens = up(torch.randn(2, 16000), torch.tensor([16000, 8000]))  # doctest: +SKIP
        >>> lens                                                             # doctest: +SKIP
        tensor([49, 24])
    """

    def __init__(self, spec: UpstreamSpec, *, frozen: bool = True, allow_download: bool = False) -> None:
        super().__init__()
        self.spec = spec
        ckpt = _resolve_local_checkpoint(spec) if spec.takes_path else None

        from s3prl import hub
        from s3prl.nn import S3PRLUpstream

        if not hasattr(hub, spec.name):
            close = difflib.get_close_matches(spec.name, hub.options(), n=3)
            raise ValueError(f"unknown s3prl upstream {spec.name!r}" + (f"; did you mean {close}?" if close else ""))
        fetched: list[Path] = []
        try:
            with _s3prl_downloads(spec.cache_dir, allow_download, fetched):
                self.upstream = S3PRLUpstream(spec.name, path_or_url=None if ckpt is None else str(ckpt))
        except _MissingDownload as missing:
            raise ValueError(missing.message(spec)) from None
        except Exception as err:  # s3prl/transformers/ESPnet raise anything from AssertionError to KeyError
            where = ckpt if ckpt is not None else f"s3prl hub entry {spec.name!r}"
            raise ValueError(f"{where}: could not load as s3prl upstream {spec.name!r}: {err!r}") from err
        if ckpt is not None:
            self._checkpoint_root, self._checkpoint_files = _model_files(ckpt, spec.name)
        else:
            self._checkpoint_files = sorted(set(fetched))
            self._checkpoint_root = Path(os.path.commonpath([f.parent for f in self._checkpoint_files]))

        expert = self.upstream.upstream
        if type(expert).__module__ == _ESPNET_EXPERT:
            if ckpt is not None:
                _check_espnet_weights(ckpt, expert.model)
            # that expert builds on CUDA when it can; start on CPU like every other expert
            self.upstream.cpu()
        if type(expert).__module__ in ("s3prl.upstream.hf_wav2vec2.expert", "s3prl.upstream.hf_hubert.expert"):
            # A fixed layer count (s3prl asserts it) and no hidden SpecAugment: augmentation is the
            # trainer's business, identical across formats.
            expert.model.config.layerdrop = 0.0
            expert.model.config.apply_spec_augment = False

        # kept as a name: assigning the module would register it twice (duplicate state_dict keys)
        self._feature_extractor_name = _find_feature_extractor(expert)
        self._convs = [
            (m.kernel_size[0], m.stride[0], m.padding[0], m.dilation[0])
            for m in self._feature_extractor.modules()
            if isinstance(m, nn.Conv1d)
        ]
        self._downsample_rate = math.prod(stride for _, stride, _, _ in self._convs)
        if set(self.upstream.downsample_rates) != {self._downsample_rate} or len(set(self.upstream.hidden_sizes)) != 1:
            raise ValueError(
                f"{spec.name}: expected one hidden size and a stride of {self._downsample_rate} samples for all "
                f"hidden states, s3prl reports sizes {self.upstream.hidden_sizes} and strides "
                f"{self.upstream.downsample_rates}"
            )
        self.padding_strategy = self._choose_padding_strategy(expert)
        logger.info(
            "SSL upstream %s (%s): %d hidden states x %d dims, %d samples/frame, %s forward",
            spec.name,
            spec.path or "hub",
            self.num_hidden_states,
            self.hidden_size,
            self.downsample_rate,
            self.padding_strategy,
        )
        self.frozen = frozen
        self.set_frozen(frozen)

    # ---------------------------------------------------------------- properties
    @property
    def num_hidden_states(self) -> int:
        """Number of hidden states returned: transformer layers + 1 (state 0), except ``espnet_hubert``."""
        return self.upstream.num_layers

    @property
    def hidden_size(self) -> int:
        """Feature dimension D of every hidden state."""
        return self.upstream.hidden_sizes[0]

    @property
    def downsample_rate(self) -> int:
        """Input samples per output frame (320 = 20 ms at 16 kHz)."""
        return self._downsample_rate

    @property
    def frame_rate_hz(self) -> float:
        """Output frames per second of audio (50.0 for wav2vec2-family models)."""
        return SAMPLE_RATE / self._downsample_rate

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame of the conv stack (400 = 25 ms for wav2vec2-family models)."""
        field, jump = 1, 1
        for kernel, stride, _, dilation in self._convs:
            field += (kernel - 1) * dilation * jump
            jump *= stride
        return field

    @property
    def _feature_extractor(self) -> nn.Module:
        return self.upstream.upstream.get_submodule(self._feature_extractor_name)

    @property
    def batched(self) -> bool:
        """Whether a padded batch runs through the model at once (else one utterance at a time)."""
        return self.padding_strategy == "batched"

    @property
    def checkpoint_files(self) -> list[Path]:
        """The files the model was built from (for hub names: the cached download)."""
        return list(self._checkpoint_files)

    @functools.cached_property
    def checkpoint_sha256(self) -> str:
        """Provenance digest of :attr:`checkpoint_files`; a single file gives its plain SHA-256.

        For a directory checkpoint this equals :func:`checkpoint_sha256` of the directory.
        """
        files = self._checkpoint_files
        return _file_sha256(files[0]) if len(files) == 1 else _files_sha256(self._checkpoint_root, files)

    def provenance(self) -> dict[str, object]:
        """JSON-ready record of this upstream, for stages that store what their features came from.

        Returns:
            ``{"upstream": spec dict, "sha256", "num_hidden_states", "hidden_size", "downsample_rate"}``.
        """
        return {
            "upstream": self.spec.to_dict(),
            "sha256": self.checkpoint_sha256,
            "num_hidden_states": self.num_hidden_states,
            "hidden_size": self.hidden_size,
            "downsample_rate": self.downsample_rate,
        }

    # ---------------------------------------------------------------- modes
    def set_frozen(self, frozen: bool) -> None:
        """Switch between frozen (feature extraction) and trainable (fine-tuning) mode."""
        self.frozen = frozen
        self.upstream.requires_grad_(not frozen)
        self._feature_extractor.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> SSLUpstream:
        """Set training mode; a frozen upstream always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.upstream.eval()
        return self

    # ---------------------------------------------------------------- forward
    def num_frames(self, wav_lens: torch.Tensor) -> torch.Tensor:
        """Output frames per utterance, from the model's conv stack.

        Utterances shorter than :attr:`receptive_field` count as zero-padded to it (one frame).

        Args:
            wav_lens: (B,) lengths in samples.

        Returns:
            (B,) long tensor of frame counts, e.g. 49 for 16000 samples.
        """
        lens = wav_lens.to(torch.long).clamp(min=self.receptive_field)
        for kernel, stride, padding, dilation in self._convs:
            lens = torch.div(lens + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1
        return lens

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Compute all hidden states of a padded batch.

        Args:
            wavs: (B, T) float waveforms at 16 kHz, zero- or garbage-padded after each length.
            wav_lens: (B,) lengths in samples (1 <= wav_lens <= T).

        Returns:
            hidden_states: :attr:`num_hidden_states` tensors of shape (B, F, D), F = max(hs_lens);
                frames at or after an utterance's length are zero.
            hs_lens: (B,) long, frames per utterance (:meth:`num_frames`).
        """
        if wavs.dim() != 2 or wav_lens.dim() != 1 or wavs.size(0) != wav_lens.size(0):
            raise ValueError(
                f"expected wavs (B, T) and wav_lens (B,), got {tuple(wavs.shape)} and {tuple(wav_lens.shape)}"
            )
        wav_lens = wav_lens.to(device=wavs.device, dtype=torch.long)
        if wav_lens.numel() == 0 or int(wav_lens.min()) < 1 or int(wav_lens.max()) > wavs.size(1):
            raise ValueError(f"wav_lens must lie in [1, {wavs.size(1)}], got {wav_lens.tolist()}")
        hs_lens = self.num_frames(wav_lens)
        if type(self.upstream.upstream).__module__ == _ESPNET_EXPERT:
            # that expert moves inputs to the device it was built on; follow the module instead
            self.upstream.upstream.device = wavs.device
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            if self.batched:
                states = self._forward_batch(wavs, wav_lens, int(hs_lens.max()))
            else:
                states = self._forward_each(wavs, wav_lens, hs_lens)
        pad = torch.arange(states[0].size(1), device=wavs.device)[None, :] >= hs_lens[:, None]
        return [h.masked_fill(pad[..., None], 0.0) for h in states], hs_lens

    def _forward_batch(self, wavs: torch.Tensor, wav_lens: torch.Tensor, max_frames: int) -> list[torch.Tensor]:
        # Zero everything after each length: short utterances are padded to _MIN_SAMPLES with
        # zeros whether alone or in a batch, and beyond that the model's mask takes over.
        model_lens = wav_lens.clamp(min=_MIN_SAMPLES)
        width = int(model_lens.max())
        wavs = nn.functional.pad(wavs, (0, max(0, width - wavs.size(1))))[:, :width]
        wavs = wavs.masked_fill(torch.arange(width, device=wavs.device)[None, :] >= wav_lens[:, None], 0.0)
        states, _ = self.upstream(wavs, model_lens)
        return [h[:, :max_frames] for h in states]

    def _forward_each(self, wavs: torch.Tensor, wav_lens: torch.Tensor, hs_lens: torch.Tensor) -> list[torch.Tensor]:
        per_state: list[list[torch.Tensor]] = [[] for _ in range(self.num_hidden_states)]
        for wav, length, frames in zip(wavs, wav_lens.tolist(), hs_lens.tolist()):
            wav = nn.functional.pad(wav[:length], (0, max(0, _MIN_SAMPLES - length)))[None]
            states, _ = self.upstream(wav, torch.tensor([wav.size(1)], device=wav.device))
            for i, h in enumerate(states):
                per_state[i].append(h[0, :frames])
        return [pad_sequence(hs, batch_first=True) for hs in per_state]

    def _choose_padding_strategy(self, expert: nn.Module) -> str:
        """Pick "batched" where padding provably cannot leak into frames, else "per_utterance"."""
        if any(isinstance(m, nn.GroupNorm) for m in self._feature_extractor.modules()):
            return "per_utterance"  # normalises each channel over the whole (padded) time axis
        module = type(expert).__module__
        if type(expert).__name__ != "UpstreamExpert":  # e.g. fairseq-based legacy experts
            return "per_utterance"
        if module in _EXACT_MASK_EXPERTS and getattr(expert, "apply_padding_mask", True):
            return "batched"
        if module in _CHUNKED_MASK_EXPERTS and hasattr(expert.model, "forward_padding_mask"):
            expert.model.forward_padding_mask = _ExactFrameMask(self._convs)
            return "batched"
        return "per_utterance"


class _ExactFrameMask:
    """Drop-in for fairseq-style ``model.forward_padding_mask(features, padding_mask)``.

    The original marks a frame as padding only if a whole ``T // F`` chunk of samples is padding,
    which can leave a frame that overlaps the padding attendable. This computes each utterance's
    frame count with the conv formula instead. A plain class (not a closure) keeps the model
    picklable.
    """

    def __init__(self, convs: list[tuple[int, int, int, int]]) -> None:
        self.convs = list(convs)

    def __call__(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, F, D) features, (B, T) sample padding mask (True = pad) -> (B, F) frame padding mask."""
        lens = (~padding_mask).sum(-1)
        for kernel, stride, padding, dilation in self.convs:
            lens = torch.div(lens + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1
        return torch.arange(features.size(1), device=features.device)[None, :] >= lens[:, None]


# -------------------------------------------------------------------- helpers
class _MissingDownload(Exception):
    def __init__(self, filepath: Path, url: str) -> None:
        super().__init__(str(filepath))
        self.filepath, self.url = filepath, url

    def message(self, spec: UpstreamSpec) -> str:
        cache = spec.cache_dir or str(self.filepath.parent)
        return (
            f"s3prl upstream {spec.name!r}: checkpoint not cached at {self.filepath} and downloads are off "
            f"(offline). On a machine with network, fetch it into the cache dir and copy that file here, e.g.\n"
            f"  wget -O {self.filepath} {self.url}\n"
            f'or: python -c "from espnet2_ext.ssl import SSLUpstream, UpstreamSpec; '
            f'SSLUpstream(UpstreamSpec({spec.name!r}, cache_dir={cache!r}), allow_download=True)"'
        )


@contextlib.contextmanager
def _s3prl_downloads(cache_dir: str | None, allow_download: bool, fetched: list[Path]) -> Iterator[None]:
    """Point s3prl's downloads at ``cache_dir`` and record (or, offline, refuse) each one.

    s3prl resolves every hub URL through ``s3prl.util.download._download(filepath, url, ...)``;
    wrapping it lets us name the exact file a hub entry expects without touching the network.
    """
    from s3prl.util import download

    original_dir, original_download = download._download_dir, download._download

    def checked_download(filepath: Path, url: str, *args, **kwargs) -> None:
        filepath = Path(filepath)
        if not filepath.is_file() and not allow_download:
            raise _MissingDownload(filepath, url)
        original_download(filepath, url, *args, **kwargs)
        fetched.append(filepath.resolve())

    if cache_dir is not None:
        download.set_dir(cache_dir)
    download._download = checked_download
    try:
        yield
    finally:
        download._download = original_download
        download.set_dir(original_dir)


def _resolve_local_checkpoint(spec: UpstreamSpec) -> Path:
    """The path s3prl's upstream ``spec.name`` takes, checked to exist and be complete."""
    path = Path(spec.path)
    if not path.exists():
        raise ValueError(f"{path}: SSL checkpoint for upstream {spec.name!r} not found")
    if spec.name.startswith("hf_"):
        for required in ("config.json", "preprocessor_config.json"):
            if not (path / required).is_file():
                raise ValueError(
                    f"{path}: {spec.name} needs a transformers save_pretrained directory with {required}; "
                    "write it with model.save_pretrained(dir) and Wav2Vec2FeatureExtractor(...).save_pretrained(dir) "
                    "(s3prl would otherwise try to download facebook/wav2vec2-base's)"
                )
        return path
    if spec.name == "espnet_hubert_local":
        if path.is_dir():
            pths = sorted(path.glob("*.pth"))
            if len(pths) != 1:
                raise ValueError(
                    f"{path}: expected exactly one .pth next to config.yaml, found {[p.name for p in pths]}; "
                    "give the .pth file itself as the path"
                )
            path = pths[0]
        if not (path.parent / "config.yaml").is_file():
            raise ValueError(f"{path}: espnet_hubert_local needs the training config.yaml in the same directory")
        return path
    if not path.is_file():
        raise ValueError(f"{path}: upstream {spec.name!r} expects a checkpoint file, not a directory")
    return path


def _model_files(ckpt: Path, name: str) -> tuple[Path, list[Path]]:
    """``(root, files)``: the files that define a local model (what provenance hashes)."""
    ckpt = ckpt.resolve()
    if ckpt.is_dir():
        return ckpt, sorted(f for f in ckpt.rglob("*") if f.is_file() and not _is_hidden(f.relative_to(ckpt)))
    if name == "espnet_hubert_local":
        return ckpt.parent, sorted([ckpt, ckpt.parent / "config.yaml"])
    return ckpt.parent, [ckpt]


def _find_feature_extractor(expert: nn.Module) -> str:
    """Name of the waveform conv stack (``*.feature_extractor`` in s3prl, transformers, torchaudio)."""
    for name, module in expert.named_modules():
        if name.rsplit(".", 1)[-1] == "feature_extractor" and any(isinstance(m, nn.Conv1d) for m in module.modules()):
            return name
    raise ValueError(
        f"{type(expert).__module__}: no conv feature extractor found; SSLUpstream supports waveform "
        "conv-stack models (wav2vec 2.0 / XLS-R, HuBERT, WavLM)"
    )


def _check_espnet_weights(pth: Path, model: nn.Module) -> None:
    """ESPnet loads with strict=False: make sure the file really held every HuBERT weight."""
    state = _load_state(pth)
    in_file = {k[len(_ESPNET_PREFIX) :] for k in state if k.startswith(_ESPNET_PREFIX)}
    missing = sorted(set(model.state_dict()) - in_file)
    if missing:
        raise ValueError(
            f"{pth}: {len(missing)} HuBERT weight(s) missing (e.g. {missing[:3]}); ESPnet would silently keep "
            "random values. Is this a HubertTask checkpoint matching config.yaml?"
        )


def _load_state(path: Path) -> dict:
    """``torch.load`` a checkpoint dict safely (tensors and plain containers only), memory-mapped."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (pre zip) serialisation cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: not a readable plain checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "raw fairseq checkpoints must first be converted with s3prl.upstream.{hubert,wav2vec2}.convert"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(state).__name__}")
    return state


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable JSON ({err})") from err


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_sha256(root: Path, files: list[Path]) -> str:
    lines = sorted(f"{Path(f).relative_to(root).as_posix()}\t{_file_sha256(Path(f))}\n" for f in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
