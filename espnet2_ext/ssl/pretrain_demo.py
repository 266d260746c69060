"""Pre-train the demo SSL model: a small wav2vec2 (XLS-R architecture) with multilingual phoneme CTC.

Two objectives (``train:`` section, :class:`TrainConfig`):

- phoneme CTC from hidden state ``ctc_layer`` (default: the top one);
- optionally (``mlm_weight > 0``), HuBERT's first-iteration objective on the TOP state: spans of
  the transformer's input frames are replaced by a learned embedding and the top state predicts
  the MFCC k-means class (``mlm_k`` classes, fitted on the training set) of each masked frame.

CTC on a middle state with masked prediction on top (``conf/ssl/demo_ssl_midlayer.yaml``) aims at
the layer profile reported for pre-trained wav2vec 2.0 / XLS-R: phonetic middle layers, top layers
serving the pre-training objective. What it gave in the demo (a flat probe profile, a different
step 2) is in README.md, "What the demo shows"; the kept checkpoint uses the top-layer CTC alone.

The model is built from a ``transformers.Wav2Vec2Config`` (the YAML ``model:`` section), saved as
a ``save_pretrained`` directory exactly like ``facebook/wav2vec2-xls-r-300m`` ships, and trained
THROUGH :class:`espnet2_ext.ssl.upstream.SSLUpstream` (the loader every later stage uses), so the
waveform normalisation, masks and frame counts in training are the ones seen downstream.

Training is a plain loop (ESPnet's trainer is used for step 0 and the ASR models; this job is
demo-only scaffolding that replaces XLS-R's pre-training): length-bucketed batches, AdamW with
linear warm-up and linear decay, a checkpoint after each epoch that a rerun resumes from, greedy
phoneme error rate on the dev set, and a JSON log.

Outputs in ``out_dir``: ``model/`` (the upstream checkpoint, ``hf_wav2vec2_custom`` format),
``ctc_head.pt`` and ``phonemes.txt`` (the probe head and its vocabulary), ``train_log.json``,
``checkpoint.pt`` (while training) and ``.done``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn
from tqdm import tqdm

from espnet2_ext.ssl.export import export_upstream
from espnet2_ext.ssl.phonemes import ipa_tokens
from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec
from espnet2_ext.utils.fileio import DataError, atomic_open, atomic_write_text, read_kaldi_text

logger = logging.getLogger(__name__)
BLANK = "<blank>"


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` section of the pre-training YAML."""

    seed: int = 0
    epochs: int = 10
    max_minutes: float = 0.0  # stop after this many minutes of training (0 = no limit)
    batch_seconds: float = 100.0  # audio per batch (seconds, padding included)
    lr: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    threads: int = 2
    log_every: int = 25
    ctc_layer: int = -1  # hidden state under the phoneme CTC head (-1 = the top one)
    mlm_weight: float = 0.0  # weight of masked MFCC-class prediction on the top state (0 = off)
    mlm_k: int = 100  # MFCC k-means classes (HuBERT's first iteration: 100)
    mask_prob: float = 0.3  # span starts per frame x mask_length ~ the masked share of frames
    mask_length: int = 10  # frames per masked span


def init_model_dir(model_conf: dict, out_dir: Path, seed: int) -> Path:
    """Write a random-init wav2vec2 ``save_pretrained`` directory (XLS-R's feature-extractor settings)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**model_conf))
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out_dir)
    return out_dir


class PhonemeCTC(nn.Module):
    """SSL upstream (all of it trainable, conv extractor included) + a linear phoneme CTC head on
    hidden state ``ctc_layer`` and, with ``mlm_k > 0``, a masked-prediction head on the top state."""

    def __init__(self, upstream: SSLUpstream, vocab_size: int, dropout: float = 0.1, *, ctc_layer: int = -1,
                 mlm_k: int = 0, mask_prob: float = 0.0, mask_length: int = 10) -> None:
        super().__init__()
        if not -upstream.num_hidden_states <= ctc_layer < upstream.num_hidden_states:
            raise ValueError(f"ctc_layer {ctc_layer} is not one of the model's {upstream.num_hidden_states} hidden states")
        self.upstream = upstream
        self.ctc_layer = ctc_layer
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(upstream.hidden_size, vocab_size)
        self.mlm_head = nn.Linear(upstream.hidden_size, mlm_k) if mlm_k else None
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.frame_mask: torch.Tensor | None = None  # (B, F) True = masked, set by the hook below
        if self.mlm_head is not None:
            from transformers import Wav2Vec2Model

            hf = next((m for m in upstream.modules() if isinstance(m, Wav2Vec2Model)), None)
            if hf is None:
                raise ValueError("masked prediction needs a transformers Wav2Vec2Model upstream (hf_wav2vec2_custom)")
            # Kept outside the upstream, so the exported checkpoint is a plain wav2vec2 one.
            self.mask_embed = nn.Parameter(torch.empty(upstream.hidden_size).uniform_())
            hf.feature_projection.register_forward_hook(self._mask_frames)

    def _mask_frames(self, module: nn.Module, args: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        """Forward hook on the feature projection: replace random spans of the transformer's input."""
        if not self.training:
            self.frame_mask = None
            return output
        hidden = output[0]  # (B, F, D)
        bsz, frames, _ = hidden.shape
        starts = torch.rand(bsz, frames, device=hidden.device) < self.mask_prob / self.mask_length
        mask = torch.zeros_like(starts)
        for shift in range(self.mask_length):
            mask[:, shift:] |= starts[:, : frames - shift]
        self.frame_mask = mask
        return (torch.where(mask[..., None], self.mask_embed.to(hidden.dtype), hidden), *output[1:])

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) samples -> (B, F, V) phoneme log-probabilities and (B,) frame counts."""
        return self.forward_all(wavs, wav_lens)[:2]

    def forward_all(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Like :meth:`forward`, plus the (B, F, mlm_k) masked-prediction logits of the top state (or None)."""
        states, lens = self.upstream(wavs, wav_lens)
        logp = self.head(self.dropout(states[self.ctc_layer])).log_softmax(-1)
        mlm = self.mlm_head(self.dropout(states[-1])) if self.mlm_head is not None else None
        return logp, lens, mlm


def mfcc_classes(wavs: list[np.ndarray], k: int, seed: int) -> list[np.ndarray]:
    """HuBERT's first-iteration targets: the MFCC k-means class (``k`` classes) of every 20 ms frame.

    Returns:
        One (mfcc_num_frames(T),) int64 array per waveform.
    """
    from espnet2_ext.tokenizer.features import mfcc_features
    from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans

    feats = [mfcc_features(w) for w in tqdm(wavs, desc="MFCC targets", mininterval=10)]
    stacked = np.concatenate(feats)
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-5)  # per-dimension standardised
    classes = assign(stacked, fit_kmeans(stacked, k, seed=seed))
    return np.split(classes, np.cumsum([len(f) for f in feats])[:-1])


def _mlm_loss(logits: torch.Tensor, mask: torch.Tensor, classes: list[np.ndarray], idx: list[int],
              frames: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked, non-padded frames. logits: (B, F, K); mask: (B, F)."""
    target = torch.full(mask.shape, -100, dtype=torch.long)
    for row, i in enumerate(idx):
        n = min(int(frames[row]), len(classes[i]), mask.shape[1])
        target[row, :n] = torch.from_numpy(classes[i][:n])
    target[~mask] = -100
    if not (target >= 0).any():
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


def load_set(data_dir: Path, labels: dict[str, str], vocab: dict[str, int]) -> tuple[list[np.ndarray], list[list[int]], list[str]]:
    """Audio (float32, 16 kHz) and token ids of every utterance of ``data_dir`` that has a label."""
    wav_scp = read_kaldi_text(data_dir / "wav.scp")
    wavs, targets, utts = [], [], []
    for utt, path in tqdm(wav_scp.items(), desc=f"loading {data_dir.name}", mininterval=5):
        if utt not in labels:
            raise DataError(f"{data_dir}: no phoneme transcript for '{utt}'; rerun the phoneme step")
        ids = [vocab[t] for t in ipa_tokens(labels[utt]) if t in vocab]
        if not ids:
            continue
        audio, fs = sf.read(path, dtype="float32")
        if fs != 16000 or audio.ndim != 1:
            raise DataError(f"{path}: expected 16 kHz mono audio (utterance '{utt}')")
        wavs.append(audio)
        targets.append(ids)
        utts.append(utt)
    return wavs, targets, utts


def length_batches(lengths: list[int], max_samples: int, rng: random.Random) -> list[list[int]]:
    """Group indices of similar length so that ``batch size x longest <= max_samples``; shuffled."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > max_samples:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _collate(wavs: list[np.ndarray], targets: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, ...]:
    lens = torch.tensor([len(wavs[i]) for i in idx])
    x = torch.zeros(len(idx), int(lens.max()))
    for row, i in enumerate(idx):
        x[row, : len(wavs[i])] = torch.from_numpy(wavs[i])
    ys = [torch.tensor(targets[i]) for i in idx]
    return x, lens, torch.cat(ys), torch.tensor([len(y) for y in ys])


def _edit_distance(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def greedy_error_rate(model: PhonemeCTC, wavs: list[np.ndarray], targets: list[list[int]], batch_samples: int) -> float:
    """Token error rate of greedy CTC decoding (blank = 0) over a set."""
    model.eval()
    errors = total = 0
    with torch.no_grad():
        for idx in length_batches([len(w) for w in wavs], batch_samples, random.Random(0)):
            x, lens, _, _ = _collate(wavs, targets, idx)
            logp, frames = model(x, lens)
            best = logp.argmax(-1)
            for row, i in enumerate(idx):
                seq = best[row, : frames[row]].tolist()
                hyp = [t for k, t in enumerate(seq) if t != 0 and (k == 0 or t != seq[k - 1])]
                errors += _edit_distance(hyp, targets[i])
                total += len(targets[i])
    model.train()
    return errors / max(total, 1)


def pretrain(
    model_conf: dict,
    train_conf: TrainConfig,
    train_dir: Path,
    valid_dir: Path,
    train_labels: dict[str, str],
    valid_labels: dict[str, str],
    out_dir: Path,
) -> dict:
    """Train (or resume) the phoneme-CTC model and export the upstream. Returns the log dict."""
    torch.set_num_threads(train_conf.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    init_dir = out_dir / "init"
    if not (init_dir / "preprocessor_config.json").is_file():
        init_model_dir(model_conf, init_dir, train_conf.seed)
    tokens = sorted({t for lab in train_labels.values() for t in ipa_tokens(lab)})
    vocab = {t: i + 1 for i, t in enumerate(tokens)}  # 0 = blank
    atomic_write_text(out_dir / "phonemes.txt", "".join(f"{t}\n" for t in [BLANK, *tokens]))

    train_wavs, train_targets, _ = load_set(train_dir, train_labels, vocab)
    valid_wavs, valid_targets, _ = load_set(valid_dir, valid_labels, vocab)
    logger.info("train: %d utts (%.2f h); dev: %d utts; %d phoneme tokens", len(train_wavs),
                sum(map(len, train_wavs)) / 16000 / 3600, len(valid_wavs), len(tokens))

    upstream = SSLUpstream(UpstreamSpec("hf_wav2vec2_custom", path=str(init_dir)), frozen=False)
    upstream.upstream.requires_grad_(True)  # pre-training: the conv feature extractor learns too
    mlm_k = train_conf.mlm_k if train_conf.mlm_weight > 0 else 0  # 0: no masked-prediction head
    model = PhonemeCTC(upstream, len(vocab) + 1, ctc_layer=train_conf.ctc_layer, mlm_k=mlm_k,
                       mask_prob=train_conf.mask_prob, mask_length=train_conf.mask_length)
    classes = mfcc_classes(train_wavs, mlm_k, train_conf.seed) if mlm_k else []
    opt = torch.optim.AdamW(model.parameters(), lr=train_conf.lr, weight_decay=train_conf.weight_decay)
    batch_samples = int(train_conf.batch_seconds * 16000)
    steps_per_epoch = len(length_batches([len(w) for w in train_wavs], batch_samples, random.Random(0)))
    total_steps = steps_per_epoch * train_conf.epochs

    def lr_at(step: int) -> float:
        if step < train_conf.warmup_steps:
            return (step + 1) / train_conf.warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - train_conf.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    ckpt_path = out_dir / "checkpoint.pt"
    log: dict = {"epochs": [], "params": sum(p.numel() for p in upstream.parameters()), "seconds": 0.0}
    epoch0 = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # our own file
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        log, epoch0 = state["log"], state["epoch"]
        logger.info("resuming after epoch %d", epoch0)

    start = time.monotonic() - log["seconds"]
    model.train()
    for epoch in range(epoch0 + 1, train_conf.epochs + 1):
        batches = length_batches([len(w) for w in train_wavs], batch_samples, random.Random(train_conf.seed + epoch))
        losses, mlm_losses = [], []
        for step, idx in enumerate(tqdm(batches, desc=f"epoch {epoch}", mininterval=10), 1):
            x, lens, ys, ylens = _collate(train_wavs, train_targets, idx)
            logp, frames, mlm = model.forward_all(x, lens)
            loss = ctc(logp.transpose(0, 1), ys, frames, ylens)
            if mlm is not None:
                mlm_loss = _mlm_loss(mlm, model.frame_mask, classes, idx, frames)
                mlm_losses.append(mlm_loss.item())
                loss = loss + train_conf.mlm_weight * mlm_loss
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_conf.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % train_conf.log_every == 0:
                logger.info("epoch %d step %d/%d loss %.3f lr %.2e", epoch, step, len(batches),
                            float(np.mean(losses[-train_conf.log_every:])), sched.get_last_lr()[0])
        per = greedy_error_rate(model, valid_wavs, valid_targets, batch_samples)
        log["seconds"] = time.monotonic() - start
        log["epochs"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_per": per,
                              "minutes": log["seconds"] / 60})
        if mlm_losses:
            log["epochs"][-1]["train_mlm_loss"] = float(np.mean(mlm_losses))
        logger.info("epoch %d: train loss %.3f, dev PER %.3f, %.1f min", epoch, np.mean(losses), per, log["seconds"] / 60)
        with atomic_open(ckpt_path, "wb") as f:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "log": log, "epoch": epoch}, f)
        if train_conf.max_minutes and log["seconds"] / 60 >= train_conf.max_minutes:
            logger.info("time budget of %.0f min reached after epoch %d", train_conf.max_minutes, epoch)
            break

    export_upstream(upstream, out_dir / "model")  # a save_pretrained dir, like init_dir
    with atomic_open(out_dir / "ctc_head.pt", "wb") as f:
        torch.save(model.head.state_dict(), f)
    log["dev_per"] = log["epochs"][-1]["dev_per"] if log["epochs"] else math.nan
    atomic_write_text(out_dir / "train_log.json", json.dumps(log, indent=2) + "\n")
    return log
