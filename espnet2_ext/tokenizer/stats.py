"""Per-set unit statistics of a unit system: token rates and the challenge bitrate at each step.

For every set: utterances, seconds of audio, frames, and for each of the three streams --
``units`` (one unit per frame, vocabulary K), ``dedup`` (repeats removed, vocabulary K) and ``bpe``
(the source BPE pieces the ASR consumes, vocabulary = the ESPnet token list's size) -- tokens per
second and the bitrate by the challenge formula (:func:`~espnet2_ext.scoring.bitrate.pooled_bitrate`,
``L / N x log2 V``), plus the mean of per-utterance bitrates (ESPnet's helper script's figure).

Example:
    >>> stats = unit_stats("dump/units/twostep", "data", ["train", "test_1h"], k=500)   # doctest: +SKIP
    >>> stats["sets"]["test_1h"]["bpe"]["bitrate"]                                      # doctest: +SKIP
    412.3
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from espnet2_ext.scoring.bitrate import TokenStream, count_tokens, mean_utterance_bitrate, pooled_bitrate
from espnet2_ext.utils.fileio import DataError, atomic_write_text, read_kaldi_text


def _read_counts(set_dir: Path) -> dict[str, dict[str, int]]:
    """Stream name -> utterance -> tokens, for one set."""
    return {
        "units": count_tokens(set_dir / "units"),
        "dedup": {u: len(s) for u, s in read_kaldi_text(set_dir / "text", allow_empty_value=True).items()},
        "bpe": count_tokens(set_dir / "tokens"),
    }


def _set_stats(counts: Mapping[str, Mapping[str, int]], utt2seconds: Mapping[str, float],
               vocab: Mapping[str, int]) -> dict:
    seconds = sum(utt2seconds.values())
    out: dict[str, object] = {"utts": len(utt2seconds), "seconds": seconds, "frames": sum(counts["units"].values())}
    for name, per_utt in counts.items():
        stream = TokenStream(per_utt, vocab[name], name)
        out[name] = {
            "vocab_size": vocab[name],
            "tokens": sum(per_utt.values()),
            "tokens_per_second": sum(per_utt.values()) / seconds,
            "bitrate": pooled_bitrate([stream], seconds),
            "bitrate_mean_utterance": mean_utterance_bitrate([stream], utt2seconds),
        }
    return out


def unit_stats(units_dir: str | os.PathLike, data_root: str | os.PathLike, sets: Sequence[str], k: int,
               fs: int = 16000, eval_sets: Sequence[str] = ()) -> dict:
    """Statistics of ``units_dir/<set>/{units,text,tokens}`` for every set.

    Args:
        units_dir: ``dump/units/<system>`` (holds ``src_bpe/tokens.txt``).
        data_root: the ``data`` dir (``<set>/utt2num_samples`` gives the durations).
        sets: set names.
        k: number of units.
        fs: sampling rate of ``utt2num_samples``.
        eval_sets: sets (of ``sets``) pooled into ``summary`` (the challenge pools all test sets).

    Returns:
        ``{"k", "bpe_vocab_size", "sets": {set: {"utts", "seconds", "frames", "units"|"dedup"|"bpe":
        {"vocab_size", "tokens", "tokens_per_second", "bitrate", "bitrate_mean_utterance"}}},
        "summary": {"eval_sets", "seconds", "dedup_ratio", "bpe_tokens_per_second", "bitrate"}}``;
        the summary's bitrate is the BPE stream's, pooled over ``eval_sets``.
    """
    units_dir, data_root = Path(units_dir), Path(data_root)
    token_list = units_dir / "src_bpe" / "tokens.txt"
    if not token_list.is_file():
        raise DataError(f"{token_list}: not found; train the source BPE first")
    vocab = {"units": k, "dedup": k, "bpe": len(token_list.read_text(encoding="utf-8").splitlines())}
    result: dict[str, object] = {"k": k, "bpe_vocab_size": vocab["bpe"], "sets": {}}
    pooled: dict[str, dict[str, int]] = {"units": {}, "dedup": {}, "bpe": {}}
    seconds = 0.0
    for name in sets:
        samples = read_kaldi_text(data_root / name / "utt2num_samples")
        utt2seconds = {u: int(n) / fs for u, n in samples.items()}
        counts = _read_counts(units_dir / name)
        result["sets"][name] = _set_stats(counts, utt2seconds, vocab)
        if name in eval_sets:
            seconds += sum(utt2seconds.values())
            for key in pooled:  # keyed by set too: a LibriSpeech id may recur across sets
                pooled[key].update({f"{name}/{u}": n for u, n in counts[key].items()})
    if seconds:
        result["summary"] = {
            "eval_sets": [name for name in sets if name in eval_sets],
            "seconds": seconds,
            "dedup_ratio": sum(pooled["dedup"].values()) / sum(pooled["units"].values()),
            "bpe_tokens_per_second": sum(pooled["bpe"].values()) / seconds,
            "bitrate": pooled_bitrate([TokenStream(pooled["bpe"], vocab["bpe"], "bpe")], seconds),
        }
    return result


def write_stats(stats: Mapping, out: str | os.PathLike) -> None:
    """``stats.json`` (atomic)."""
    atomic_write_text(out, json.dumps(stats, indent=2) + "\n")


def format_stats(stats: Mapping) -> str:
    """A markdown table: one row per set, tokens/s and bitrate of each stream."""
    lines = [f"K={stats['k']}, BPE token list {stats['bpe_vocab_size']}", "",
             "| set | utts | hours | units/s | dedup units/s | BPE tokens/s | bitrate units | dedup | BPE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats["sets"].items():
        lines.append(f"| {name} | {s['utts']} | {s['seconds'] / 3600:.2f} | "
                     + " | ".join(f"{s[k]['tokens_per_second']:.1f}" for k in ("units", "dedup", "bpe")) + " | "
                     + " | ".join(f"{s[k]['bitrate']:.0f}" for k in ("units", "dedup", "bpe")) + " |")
    return "\n".join(lines) + "\n"
