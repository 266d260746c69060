"""Layer probe: is an SSL model any good? A small CTC head per hidden state vs. MFCC k-means units.

The requirement for the SSL model every later stage builds on: *a small CTC head on its best layer
reaches a CER well below that of MFCC k-means units on the test set*. A model whose layers are not
better than MFCC units cannot show what layer weighting adds (docs/CALIBRATION.md: the naive demo
model's layers gave 0.89 CER against 0.63 for MFCC units). :func:`run_probe` measures exactly that:

1. **Features, once.** Every utterance goes through the frozen upstream once (length-bucketed
   batches, ``no_grad``); every selected hidden state is kept in memory as float16, flat
   ``(frames, D)`` per state. Memory: ``frames x D x states x 2`` bytes, frames = hours x 3600 x 50;
   the demo (3.3 h train, ~600k frames, D=192, 9 states) needs ~2 GB.
   MFCC (:func:`espnet2_ext.tokenizer.features.mfcc_features`): ``torchaudio.compliance.kaldi.mfcc`` with Kaldi defaults (25 ms window, 10 ms hop,
   23 mel bins, 13 coefficients, ``use_energy=False``, no dither) plus deltas and delta-deltas
   (39 dims, computed at 100 Hz as in HuBERT's first iteration), then every 2nd frame: 20 ms,
   the SSL frame rate. Kept as float32.
2. **Units.** MFCC k-means (:func:`espnet2_ext.tokenizer.fit_kmeans`) on the train frames; every
   frame labelled with :func:`espnet2_ext.tokenizer.assign`.
3. **The same head for every input** (:class:`ProbeHead`): input projection (``Linear(D, 256)``
   after per-dimension standardisation with train statistics, or ``Embedding(K, 256)`` for
   units) -> 2 x (``Conv1d`` kernel 5, 256 channels, GELU, dropout) -> ``Linear`` to
   characters + blank. Trained with CTC, Adam, a linear warm-up and linear decay, for a fixed
   number of epochs of length-bucketed batches, seeded.
4. **Scored the project's way.** Characters are those of the normalised train text
   (:func:`~espnet2_ext.scoring.normalize.normalize_for_cer`, so spaces count); greedy CTC
   decoding of the test set; CER from :func:`~espnet2_ext.scoring.cer.score_set`.

Example:
    >>> result = run_probe({"name": "hf_wav2vec2_custom", "path": "exp/ssl_pretrain/model"},
    ...                    "data/train", "data/test_1h", epochs=10)            # doctest: +SKIP
    >>> result["best"], result["mfcc_units_cer"]                               # doctest: +SKIP
    ({'name': 'state 5', 'layer': 5, 'cer': 0.21}, 0.58)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn
from tqdm import tqdm

from espnet2_ext.data.datadir import read_wav
from espnet2_ext.scoring.cer import score_set
from espnet2_ext.scoring.normalize import normalize_for_cer
from espnet2_ext.ssl.pretrain_demo import length_batches
from espnet2_ext.ssl.upstream import SAMPLE_RATE, SSLUpstream, UpstreamSpec
from espnet2_ext.tokenizer.features import mfcc_features
from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans
from espnet2_ext.utils.fileio import DataError, atomic_write_text, listing, read_kaldi_text

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10
MFCC_NAME = "MFCC k-means units"
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_EXAMPLES = 3  # test hypotheses kept per run in the result, for a quick look


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Head and training settings shared by every probe run (the epochs are :func:`run_probe`'s).

    Attributes:
        channels: width of the head (input projection and both conv layers).
        kernel_size: conv kernel in frames (odd; 5 frames = 100 ms at 20 ms frames).
        dropout: after each conv block.
        lr: Adam peak learning rate.
        warmup_steps: linear warm-up steps, at most a quarter of all steps (short runs still decay).
        batch_frames: frames per batch, padding included (6000 = 120 s of audio at 50 Hz).
        grad_clip: max gradient norm.
        seed: seeds head init, dropout, batch order, the k-means and the train subset.
        extract_batch_seconds: audio per upstream forward batch, padding included.
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available), for extraction and training.
    """

    channels: int = 256
    kernel_size: int = 5
    dropout: float = 0.1
    lr: float = 1e-3
    warmup_steps: int = 100
    batch_frames: int = 6000
    grad_clip: float = 5.0
    seed: int = 0
    extract_batch_seconds: float = 60.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"ProbeConfig.kernel_size must be odd (same-length conv), got {self.kernel_size}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"ProbeConfig.device must be cpu, cuda or auto, got {self.device!r}")


class FrameSeqs:
    """Variable-length frame sequences stored flat, fairseq style: ``data[offsets[i]:offsets[i+1]]``.

    Args:
        data: (N, D) float features or (N,) int unit ids, N = sum of lengths.
        lengths: frames per sequence.
    """

    def __init__(self, data: np.ndarray, lengths: Sequence[int] | np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if (lengths < 0).any() or int(lengths.sum()) != len(data):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but data holds {len(data)} frames")
        self.data = data
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])

    @classmethod
    def from_list(cls, seqs: Sequence[np.ndarray]) -> FrameSeqs:
        """Flatten a list of (F_i, D) or (F_i,) arrays."""
        return cls(np.concatenate(seqs), [len(s) for s in seqs])

    @property
    def is_units(self) -> bool:
        """Whether the frames are integer unit ids (else continuous features)."""
        return self.data.ndim == 1 and np.issubdtype(self.data.dtype, np.integer)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


@dataclasses.dataclass
class ProbeSet:
    """Features of one data dir, aligned by index with ``utt_ids``.

    Attributes:
        name: the data dir's name (``train``, ``test_1h``).
        utt_ids: sorted utterance ids.
        texts: utterance id -> raw transcript.
        utt2lang: utterance id -> language, or None (then score_set takes it from the id).
        states: hidden-state index -> float16 (frames, D) sequences.
        mfcc: float32 (frames, 39) sequences at 20 ms.
        seconds: audio duration.
    """

    name: str
    utt_ids: list[str]
    texts: dict[str, str]
    utt2lang: dict[str, str] | None
    states: dict[int, FrameSeqs]
    mfcc: FrameSeqs
    seconds: float


# ------------------------------------------------------------------------ features
def _read_set(data_dir: Path, max_utts: int | None, seed: int) -> tuple[list[str], dict, dict, dict | None, dict]:
    """Ids (sorted, optionally a seeded random subset), wav.scp, text, utt2lang, samples per utterance."""
    wav_scp = read_kaldi_text(data_dir / "wav.scp")
    texts = read_kaldi_text(data_dir / "text", allow_empty_value=True)
    no_text = sorted(set(wav_scp) - set(texts))
    no_wav = sorted(set(texts) - set(wav_scp))
    if no_text or no_wav:
        raise DataError(
            f"{data_dir}: wav.scp and text disagree (no text: {listing(no_text, 3, ', ') or '-'}; "
            f"no audio: {listing(no_wav, 3, ', ') or '-'}); fix the data dir"
        )
    utt_ids = sorted(wav_scp)
    if not utt_ids:
        raise DataError(f"{data_dir}/wav.scp: no utterances")
    if max_utts is not None and max_utts < len(utt_ids):
        utt_ids = sorted(random.Random(seed).sample(utt_ids, max_utts))
    utt2lang = read_kaldi_text(data_dir / "utt2lang") if (data_dir / "utt2lang").is_file() else None
    if (data_dir / "utt2num_samples").is_file():
        num_samples = {u: int(n) for u, n in read_kaldi_text(data_dir / "utt2num_samples").items()}
    else:
        num_samples = {}
    for utt in utt_ids:
        if utt not in num_samples:
            num_samples[utt] = sf.info(wav_scp[utt]).frames
    return utt_ids, wav_scp, texts, utt2lang, num_samples


def extract_features(
    upstream: SSLUpstream,
    data_dir: str | Path,
    layers: Sequence[int],
    *,
    max_utts: int | None = None,
    seed: int = 0,
    batch_seconds: float = 60.0,
) -> ProbeSet:
    """One frozen forward pass per utterance for all ``layers`` at once, plus MFCC features.

    Args:
        upstream: a frozen :class:`SSLUpstream` on the device to run on.
        data_dir: Kaldi data dir with ``wav.scp`` and ``text`` (``utt2lang``, ``utt2num_samples``
            used when present).
        layers: hidden-state indices to keep.
        max_utts: keep a seeded random subset of this many utterances.
        seed: for the subset.
        batch_seconds: audio per forward batch, padding included.

    Returns:
        The set's features; memory ``frames x D x len(layers) x 2`` bytes plus 156 bytes per frame
        of MFCC.
    """
    data_dir = Path(data_dir)
    utt_ids, wav_scp, texts, utt2lang, num_samples = _read_set(data_dir, max_utts, seed)
    lengths = [num_samples[u] for u in utt_ids]
    frames = upstream.num_frames(torch.tensor(lengths)).numpy()
    offsets = np.concatenate([[0], np.cumsum(frames)])
    states = {layer: np.zeros((int(offsets[-1]), upstream.hidden_size), dtype=np.float16) for layer in layers}
    mfccs: list[np.ndarray] = [np.zeros((0, 39), np.float32)] * len(utt_ids)
    device = next(upstream.parameters()).device
    clipped = 0
    progress = tqdm(total=len(utt_ids), desc=f"features {data_dir.name}", unit="utt", mininterval=5)
    for idx in length_batches(lengths, int(batch_seconds * SAMPLE_RATE), random.Random(0)):
        wavs = [read_wav(wav_scp[utt_ids[i]], utt_ids[i], lengths[i]) for i in idx]
        for i, wav in zip(idx, wavs):
            mfccs[i] = mfcc_features(wav)
        wav_lens = torch.tensor([len(w) for w in wavs])
        batch = torch.zeros(len(wavs), int(wav_lens.max()))
        for row, wav in enumerate(wavs):
            batch[row, : len(wav)] = torch.from_numpy(wav)
        hidden, hs_lens = upstream(batch.to(device), wav_lens.to(device))
        hs_lens = hs_lens.tolist()
        if hs_lens != [int(frames[i]) for i in idx]:
            raise RuntimeError(f"upstream returned {hs_lens} frames, num_frames() said {[int(frames[i]) for i in idx]}")
        for layer in layers:
            h = hidden[layer].float().cpu().numpy()
            for row, i in enumerate(idx):
                x = h[row, : hs_lens[row]]
                if np.abs(x).max(initial=0.0) > _FLOAT16_MAX:
                    clipped += 1
                    x = np.clip(x, -_FLOAT16_MAX, _FLOAT16_MAX)
                states[layer][offsets[i] : offsets[i + 1]] = x
        progress.update(len(idx))
    progress.close()
    if clipped:
        logger.warning("%s: %d utterance-states exceeded the float16 range and were clipped", data_dir, clipped)
    return ProbeSet(
        name=data_dir.name,
        utt_ids=utt_ids,
        texts={u: texts[u] for u in utt_ids},
        utt2lang=utt2lang,
        states={layer: FrameSeqs(states[layer], frames) for layer in layers},
        mfcc=FrameSeqs.from_list(mfccs),
        seconds=sum(lengths) / SAMPLE_RATE,
    )


# ------------------------------------------------------------------------ head
class ProbeHead(nn.Module):
    """The probe: input projection -> 2 x (Conv1d, GELU, dropout) -> Linear to characters + blank.

    Args:
        num_outputs: characters + 1 (blank = 0).
        input_dim: D for continuous (B, F, D) input; standardised with :meth:`set_standardization`
            statistics, then ``Linear(D, channels)``.
        num_units: K for (B, F) unit-id input: ``Embedding(K, channels)``. Give exactly one of the two.
        channels, kernel_size, dropout: see :class:`ProbeConfig`.

    Frames at or after an utterance's length are zeroed after every layer, so padding never
    reaches a real frame through the convolutions.
    """

    def __init__(
        self,
        num_outputs: int,
        *,
        input_dim: int | None = None,
        num_units: int | None = None,
        channels: int = 256,
        kernel_size: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if (input_dim is None) == (num_units is None):
            raise ValueError("ProbeHead needs exactly one of input_dim (features) and num_units (unit ids)")
        self.units = num_units is not None
        if self.units:
            self.input = nn.Embedding(num_units, channels)
        else:
            self.register_buffer("mean", torch.zeros(input_dim))
            self.register_buffer("std", torch.ones(input_dim))
            self.input = nn.Linear(input_dim, channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2), nn.GELU(), nn.Dropout(dropout))
            for _ in range(2)
        )
        self.output = nn.Linear(channels, num_outputs)

    def set_standardization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Per-dimension mean and standard deviation of the train features (continuous input only)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, F, D) features or (B, F) unit ids, (B,) frame counts -> (B, F, num_outputs) logits."""
        if not self.units:
            x = (x - self.mean) / self.std
        mask = (torch.arange(x.size(1), device=x.device)[None, :] < lens[:, None]).to(torch.float32)
        h = (self.input(x) * mask[..., None]).transpose(1, 2)  # (B, C, F)
        for block in self.blocks:
            h = block(h) * mask[:, None, :]
        return self.output(h.transpose(1, 2))


def _feature_stats(seqs: FrameSeqs, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (floored at 1e-5) of all frames, accumulated in float64."""
    total = np.zeros(seqs.data.shape[1])
    squares = np.zeros(seqs.data.shape[1])
    for start in range(0, len(seqs.data), chunk):
        x = seqs.data[start : start + chunk].astype(np.float64)
        total += x.sum(0)
        squares += (x * x).sum(0)
    n = max(len(seqs.data), 1)
    mean = total / n
    return mean, np.sqrt(np.maximum(squares / n - mean * mean, 0.0)).clip(min=1e-5)


def _collate(seqs: FrameSeqs, idx: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lens = seqs.lengths[list(idx)]
    width = max(int(lens.max()), 1)
    if seqs.is_units:
        x = np.zeros((len(idx), width), dtype=np.int64)
    else:
        x = np.zeros((len(idx), width, seqs.data.shape[1]), dtype=np.float32)
    for row, i in enumerate(idx):
        x[row, : lens[row]] = seqs[i]
    return torch.from_numpy(x).to(device), torch.from_numpy(lens).to(device)


def ctc_feasible(frames: int, target: Sequence[int]) -> bool:
    """Whether CTC can emit ``target`` in ``frames`` frames (a blank between repeated labels)."""
    repeats = sum(a == b for a, b in zip(target, target[1:]))
    return frames >= len(target) + repeats


def train_probe(
    train: FrameSeqs,
    targets: Sequence[Sequence[int]],
    num_outputs: int,
    epochs: int,
    config: ProbeConfig,
    *,
    num_units: int | None = None,
    device: str | torch.device = "cpu",
    desc: str = "probe",
) -> tuple[ProbeHead, dict[str, float]]:
    """Train a fresh :class:`ProbeHead` with CTC on ``train`` (utterances with empty targets skipped).

    Args:
        train: continuous features or unit ids (then ``num_units`` is K).
        targets: character ids (1..num_outputs-1) per sequence of ``train``.
        num_outputs: characters + 1 (blank = 0).
        epochs: passes over the training sequences.
        config: head and optimiser settings.

    Returns:
        The trained head (eval mode) and ``{"train_loss" (last epoch mean), "steps", "train_s",
        "params", "infeasible_utts"}``.
    """
    device = torch.device(device)
    if epochs < 1:
        raise ValueError(f"the probe needs at least one epoch, got {epochs}")
    if len(train) != len(targets):
        raise ValueError(f"{len(train)} feature sequences but {len(targets)} targets")
    keep = [i for i, t in enumerate(targets) if len(t) > 0 and train.lengths[i] > 0]
    if not keep:
        raise DataError("no training utterance has both frames and a non-empty normalised transcript")
    infeasible = sum(not ctc_feasible(int(train.lengths[i]), targets[i]) for i in keep)
    if infeasible:
        logger.warning("%s: %d of %d train utterances have fewer frames than CTC needs (their loss is zeroed)",
                       desc, infeasible, len(keep))
    torch.manual_seed(config.seed)
    head_kwargs = {"channels": config.channels, "kernel_size": config.kernel_size, "dropout": config.dropout}
    if train.is_units:
        if num_units is None:
            raise ValueError("unit-id input needs num_units (the k-means K)")
        head = ProbeHead(num_outputs, num_units=num_units, **head_kwargs)
    else:
        head = ProbeHead(num_outputs, input_dim=train.data.shape[1], **head_kwargs)
        head.set_standardization(*_feature_stats(train))
    head.to(device).train()

    lengths = [int(train.lengths[i]) for i in keep]
    steps_per_epoch = len(length_batches(lengths, config.batch_frames, random.Random(0)))
    total_steps = steps_per_epoch * epochs
    warmup = max(1, min(config.warmup_steps, total_steps // 4))

    def lr_scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_scale)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    start = time.monotonic()
    losses: list[float] = []
    for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch", mininterval=5):
        losses = []
        for batch in length_batches(lengths, config.batch_frames, random.Random(config.seed * 100_003 + epoch)):
            idx = [keep[j] for j in batch]
            x, lens = _collate(train, idx, device)
            ys = torch.tensor([c for i in idx for c in targets[i]], dtype=torch.long)
            ylens = torch.tensor([len(targets[i]) for i in idx], dtype=torch.long)
            logp = head(x, lens).log_softmax(-1).transpose(0, 1)
            loss = ctc(logp, ys.to(device), lens, ylens.to(device))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        logger.debug("%s epoch %d: loss %.3f", desc, epoch, float(np.mean(losses)))
    head.eval()
    stats = {
        "train_loss": float(np.mean(losses)),
        "steps": total_steps,
        "train_s": time.monotonic() - start,
        "params": sum(p.numel() for p in head.parameters()),
        "infeasible_utts": infeasible,
    }
    logger.info("%s: %d steps, final epoch loss %.3f, %.0f s", desc, total_steps, stats["train_loss"], stats["train_s"])
    return head, stats


def greedy_decode(
    head: ProbeHead, seqs: FrameSeqs, chars: Sequence[str], batch_frames: int, device: str | torch.device = "cpu"
) -> list[str]:
    """Greedy CTC decoding: best label per frame, repeats merged, blanks (0) dropped.

    Returns:
        One string per sequence of ``seqs``, label ``j`` written as ``chars[j - 1]``.
    """
    device = torch.device(device)
    head.eval()
    hyps = [""] * len(seqs)
    with torch.no_grad():
        for idx in length_batches([int(n) for n in seqs.lengths], batch_frames, random.Random(0)):
            x, lens = _collate(seqs, idx, device)
            best = head(x, lens).argmax(-1).cpu()
            for row, i in enumerate(idx):
                labels = best[row, : lens[row]].tolist()
                hyps[i] = "".join(
                    chars[t - 1] for k, t in enumerate(labels) if t != 0 and (k == 0 or t != labels[k - 1])
                )
    return hyps


# ------------------------------------------------------------------------ the probe
def parse_layers(layers: str | Sequence[int], num_hidden_states: int) -> list[int]:
    """``"all"``, ``"0,4,8"`` or a list of ints -> sorted unique hidden-state indices, range-checked."""
    if isinstance(layers, str):
        if layers.strip() == "all":
            return list(range(num_hidden_states))
        try:
            layers = [int(p) for p in layers.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated hidden-state indices, got {layers!r}") from None
    chosen = sorted(set(layers))
    bad = [i for i in chosen if not 0 <= i < num_hidden_states]
    if bad or not chosen:
        raise ValueError(f"hidden states {bad or '(none)'} requested; the upstream has states 0..{num_hidden_states - 1}")
    return chosen


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no GPU; use --device cpu or auto")
    return torch.device(device)


def _probe_one(
    name: str,
    layer: int | None,
    train: FrameSeqs,
    targets: list[list[int]],
    test: FrameSeqs,
    test_set: ProbeSet,
    chars: list[str],
    epochs: int,
    config: ProbeConfig,
    device: torch.device,
    num_units: int | None = None,
) -> dict:
    """Train on one input, decode the test set, score it: one row of the result."""
    head, stats = train_probe(train, targets, len(chars) + 1, epochs, config, num_units=num_units, device=device,
                              desc=f"probe {name}")
    start = time.monotonic()
    hyps = dict(zip(test_set.utt_ids, greedy_decode(head, test, chars, config.batch_frames, device)))
    decode_s = time.monotonic() - start
    score = score_set(test_set.texts, hyps, utt2lang=test_set.utt2lang, set_name=test_set.name)
    total = score.total
    logger.info("%s: test CER %.2f%% (%d errors / %d characters)", name, 100 * total.cer, total.errors, total.ref_len)
    return {
        "name": name,
        "input": "ssl" if layer is not None else "mfcc_units",
        "layer": layer,
        "cer": total.cer,
        "errors": total.errors,
        "sub": total.sub,
        "del": total.dele,
        "ins": total.ins,
        "ref_len": total.ref_len,
        "per_language": {lang: counts.cer for lang, counts in score.per_language.items()},
        **stats,
        "decode_s": decode_s,
        "examples": [
            {"utt": u, "ref": normalize_for_cer(test_set.texts[u]), "hyp": hyps[u]} for u in test_set.utt_ids[:_EXAMPLES]
        ],
    }


def run_probe(
    upstream_spec: UpstreamSpec | Mapping[str, str | None],
    train_dir: str | Path,
    test_dir: str | Path,
    layers: str | Sequence[int] = "all",
    mfcc_k: int | None = 100,
    epochs: int = DEFAULT_EPOCHS,
    max_train_utts: int | None = None,
    *,
    config: ProbeConfig | None = None,
) -> dict:
    """Probe every selected hidden state of an upstream and MFCC k-means units with the same head.

    Args:
        upstream_spec: the upstream (an :class:`UpstreamSpec` or its dict, as in ``upstream.json``).
        train_dir, test_dir: Kaldi data dirs (``wav.scp``, ``text``; ``utt2lang`` optional).
        layers: ``"all"``, ``"0,4,8"`` or a list of hidden-state indices.
        mfcc_k: k-means K for the MFCC-unit row; 0 or None skips it.
        epochs: training passes of every probe run.
        max_train_utts: probe on a seeded random subset of the train set.
        config: head and optimiser settings (:class:`ProbeConfig`).

    Returns:
        JSON-ready dict: ``upstream`` (provenance), ``data`` (utterances, hours, frames),
        ``settings``, ``timing``, ``results`` (one row per hidden state, then MFCC units: ``cer``,
        error counts, per-language CER, training stats, example hypotheses), ``best`` (the hidden
        state with the lowest CER), ``mfcc_units_cer`` and ``best_vs_mfcc``.
    """
    config = config or ProbeConfig()
    spec = upstream_spec if isinstance(upstream_spec, UpstreamSpec) else UpstreamSpec.from_dict(upstream_spec)
    device = _resolve_device(config.device)
    t0 = time.monotonic()
    upstream = SSLUpstream(spec, frozen=True).to(device)
    layer_ids = parse_layers(layers, upstream.num_hidden_states)
    provenance = upstream.provenance()
    timing = {"load_s": time.monotonic() - t0}

    start = time.monotonic()
    train = extract_features(upstream, train_dir, layer_ids, max_utts=max_train_utts, seed=config.seed,
                             batch_seconds=config.extract_batch_seconds)
    timing["extract_train_s"] = time.monotonic() - start
    start = time.monotonic()
    test = extract_features(upstream, test_dir, layer_ids, batch_seconds=config.extract_batch_seconds)
    timing["extract_test_s"] = time.monotonic() - start
    del upstream
    feature_bytes = sum(s.states[layer].data.nbytes for s in (train, test) for layer in layer_ids)
    train_frames = int(train.states[layer_ids[0]].lengths.sum())
    test_frames = int(test.states[layer_ids[0]].lengths.sum())
    logger.info("features: train %d utts (%.2f h, %d frames), test %d utts (%.2f h, %d frames); %d states, %.2f GB",
                len(train.utt_ids), train.seconds / 3600, train_frames, len(test.utt_ids), test.seconds / 3600,
                test_frames, len(layer_ids), feature_bytes / 1e9)

    normalized = [normalize_for_cer(train.texts[u]) for u in train.utt_ids]
    chars = sorted(set("".join(normalized)))
    if not chars:
        raise DataError(f"{train_dir}/text: no characters left after normalisation")
    char_ids = {c: i + 1 for i, c in enumerate(chars)}
    targets = [[char_ids[c] for c in text] for text in normalized]
    oov = sorted({c for u in test.utt_ids for c in normalize_for_cer(test.texts[u])} - set(chars))
    if oov:
        logger.warning("%d test character(s) never occur in the train text (always errors): %s", len(oov), "".join(oov))

    if mfcc_k:  # units first: a K too large for the train set fails now, not after hours of probes
        start = time.monotonic()
        centroids = fit_kmeans(train.mfcc.data, mfcc_k, seed=config.seed)
        train_units = FrameSeqs(assign(train.mfcc.data, centroids), train.mfcc.lengths)
        test_units = FrameSeqs(assign(test.mfcc.data, centroids), test.mfcc.lengths)
        timing["kmeans_s"] = time.monotonic() - start

    results = []
    for layer in layer_ids:
        results.append(_probe_one(f"state {layer}", layer, train.states[layer], targets, test.states[layer], test,
                                  chars, epochs, config, device))
    if mfcc_k:
        results.append(_probe_one(MFCC_NAME, None, train_units, targets, test_units, test, chars, epochs, config,
                                  device, num_units=mfcc_k))
    timing["total_s"] = time.monotonic() - t0

    best = min(results[: len(layer_ids)], key=lambda r: r["cer"])
    mfcc_cer = results[-1]["cer"] if mfcc_k else None
    comparison = None
    if mfcc_cer is not None and mfcc_cer > 0:
        comparison = {"cer_ratio": best["cer"] / mfcc_cer, "relative_reduction": 1 - best["cer"] / mfcc_cer}
    return {
        "upstream": provenance,
        "train_dir": str(train_dir),
        "test_dir": str(test_dir),
        "data": {
            "train_utts": len(train.utt_ids),
            "test_utts": len(test.utt_ids),
            "train_hours": train.seconds / 3600,
            "test_hours": test.seconds / 3600,
            "train_frames": train_frames,
            "test_frames": test_frames,
            "train_mfcc_frames": len(train.mfcc.data),
            "test_mfcc_frames": len(test.mfcc.data),
            "feature_gb": feature_bytes / 1e9,
            "characters": "".join(chars),
        },
        "settings": {
            "layers": layer_ids,
            "epochs": epochs,
            "mfcc_k": mfcc_k or None,
            "max_train_utts": max_train_utts,
            **dataclasses.asdict(config),
            "device": str(device),
            "mfcc": "kaldi mfcc 13 (25 ms / 10 ms, use_energy=False) + deltas + delta-deltas, every 2nd frame (20 ms)",
            "head": f"input projection -> 2 x (Conv1d k={config.kernel_size}, {config.channels} ch, GELU, dropout "
            f"{config.dropout}) -> Linear({config.channels}, {len(chars) + 1})",
        },
        "timing": timing,
        "results": results,
        "best": {"name": best["name"], "layer": best["layer"], "cer": best["cer"]},
        "mfcc_units_cer": mfcc_cer,
        "best_vs_mfcc": comparison,
    }


def format_markdown(result: Mapping) -> str:
    """The probe's table: one row per hidden state (best in bold) and the MFCC-unit row, CER in %."""
    up = result["upstream"]["upstream"]
    data, settings = result["data"], result["settings"]
    lines = [
        f"# Layer probe: {up['name']}" + (f" ({up['path']})" if up.get("path") else ""),
        "",
        f"Train {data['train_utts']} utterances ({data['train_hours']:.2f} h), test {data['test_utts']} "
        f"({data['test_hours']:.2f} h); {settings['epochs']} epochs per probe; head: {settings['head']}.",
        "",
        "| hidden state | CER % |",
        "|---|---|",
    ]
    for row in result["results"]:
        label = str(row["layer"]) if row["layer"] is not None else f"{MFCC_NAME} (K={settings['mfcc_k']})"
        cer = f"{100 * row['cer']:.1f}"
        if row["layer"] is not None and row["layer"] == result["best"]["layer"]:
            label, cer = f"**{label}** (best)", f"**{cer}**"
        lines.append(f"| {label} | {cer} |")
    comparison = result.get("best_vs_mfcc")
    if comparison:
        lines += [
            "",
            f"Best hidden state {result['best']['layer']}: CER {100 * result['best']['cer']:.1f}% vs "
            f"{100 * result['mfcc_units_cer']:.1f}% for MFCC units "
            f"(relative reduction {100 * comparison['relative_reduction']:.0f}%).",
        ]
    return "\n".join(lines) + "\n"


def write_report(result: Mapping, out_json: str | Path) -> Path:
    """Write ``result`` to ``out_json`` and its table to the ``.md`` beside it (both atomic).

    Returns:
        The markdown path.
    """
    out_json = Path(out_json)
    md = out_json.with_suffix(".md")
    atomic_write_text(out_json, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(md, format_markdown(result))
    return md

