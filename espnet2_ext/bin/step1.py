"""Stage 5 job (step 1): can CTC emit every training transcript from the step-1 encoder's frames?

Step 1's encoder sees one frame per SSL frame (20 ms for XLS-R) divided by its ``input_layer``'s
subsampling (``conv2d2``: 40 ms). An utterance too short for that subsampling makes ESPnet stop
the whole training with ``TooShortUttError`` hours in; one with fewer encoder frames than CTC
needs for its transcript gets a zero loss (ESPnet's ``zero_infinity``): it is skipped in silence.
This check runs before training, like step 2's (:mod:`espnet2_ext.bin.step2` ``check_lengths``)::

    python -m espnet2_ext.bin.step1 check_lengths --config conf/step1/xls_r_300m.yaml \\
        --upstream_json exp/step0/upstream.json --data_dir data/train --token_type char \\
        --max_infeasible 0.05 --out exp/step1_step0/length_check.json

It writes the JSON report (counts, the subsampling, the utterances and their frames) and fails,
naming the utterances and the fix, when any utterance leaves the encoder no frame at all, or when
more than ``--max_infeasible`` of them are too short for their transcript. Below that threshold
the infeasible ones are counted and logged, and ESPnet skips them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from espnet2_ext.bin.cli import run_subcommand
from espnet2_ext.bin.step2 import EncoderFrames, add_length_check_options, ctc_min_frames
from espnet2_ext.utils.fileio import DataError, atomic_write_text, listing, read_kaldi_text

logger = logging.getLogger("step1")


def ssl_frames(upstream_json: Path, num_samples: list[int]) -> list[int]:
    """SSL frames per utterance of the upstream recorded in ``upstream_json`` (its exact conv arithmetic)."""
    import torch

    from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec
    from espnet2_ext.tokenizer.features import read_upstream_json

    upstream = SSLUpstream(UpstreamSpec.from_dict(read_upstream_json(upstream_json)["upstream"]))
    return upstream.num_frames(torch.tensor(num_samples, dtype=torch.long)).tolist()


def check_lengths(args: argparse.Namespace) -> dict:
    """The length report of ``args.data_dir`` (see the module docstring); raises DataError on failure."""
    import yaml
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet2_ext.tasks.asr import encoder_choices
    from espnet2_ext.tokenizer.features import read_upstream_json

    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    if not config.get("encoder"):
        raise DataError(f"{args.config}: no encoder; the length check needs step 1's encoder")
    info = read_upstream_json(args.upstream_json)
    encoder_frames = EncoderFrames(config, encoder_choices, input_size=int(info.get("hidden_size") or 1024))
    samples = {u: int(n) for u, n in read_kaldi_text(args.data_dir / "utt2num_samples").items()}
    text = read_kaldi_text(args.data_dir / "text", allow_empty_value=True)
    missing = sorted(set(samples) - set(text))
    if missing:
        raise DataError(f"{args.data_dir}/text: no transcript for {len(missing)} utterance(s): {listing(missing, 5)}")
    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel,
                                non_linguistic_symbols=args.non_linguistic_symbols)  # fmt: skip
    utts = sorted(samples)
    frames = dict(zip(utts, ssl_frames(args.upstream_json, [samples[u] for u in utts])))
    no_frame, infeasible = [], []
    for utt in utts:
        enc, need = encoder_frames(frames[utt]), ctc_min_frames(tokenizer.text2tokens(text[utt]))
        if enc <= 0:
            no_frame.append(f"{utt} ({samples[utt]} samples, {frames[utt]} SSL frames)")
        elif enc < need:
            infeasible.append(f"{utt} ({enc} encoder frames, CTC needs {need})")
    fraction = len(infeasible) / max(len(utts), 1)
    report = {
        "utterances": len(utts),
        "encoder_subsampling": round(encoder_frames.subsampling, 3),
        "encoder_lost_frames": round(encoder_frames.offset, 3),
        "target_token_type": args.token_type,
        "too_short_for_encoder": len(no_frame),
        "ctc_infeasible": len(infeasible),
        "ctc_infeasible_fraction": round(fraction, 4),
        "too_short_examples": no_frame[:20],
        "ctc_infeasible_examples": infeasible[:20],
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    fix = (f"use an encoder input_layer with less subsampling in {args.config} (linear: none), or remove them "
           f"from {args.data_dir}")
    if no_frame:
        raise DataError(
            f"{len(no_frame)} utterance(s) of {args.data_dir} are too short for the step-1 encoder's "
            f"{encoder_frames.subsampling:.3g}x subsampling (ESPnet would stop training with TooShortUttError): "
            f"{listing(no_frame, 10)}; {fix}. Report: {args.out}"
        )
    if infeasible:
        logger.warning("%d of %d utterances of %s have fewer encoder frames than CTC needs for their transcript "
                       "(ESPnet trains on them with a zero loss): %s", len(infeasible), len(utts), args.data_dir,
                       listing(infeasible, 10))  # fmt: skip
    if fraction > args.max_infeasible:
        raise DataError(
            f"{100 * fraction:.1f}% of the utterances of {args.data_dir} ({len(infeasible)} of {len(utts)}, more than "
            f"--max_infeasible {args.max_infeasible}) are too short for CTC after the step-1 encoder's "
            f"{encoder_frames.subsampling:.3g}x subsampling: {listing(infeasible, 10)}; {fix}, or raise the "
            f"threshold (run.sh --step1_max_ctc_infeasible). Report: {args.out}"
        )
    logger.info("%s", json.dumps(report))
    return report


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check_lengths", help="can CTC emit every transcript from the step-1 encoder's frames?")
    c.add_argument("--config", type=Path, required=True, help="step-1 training config (conf/step1/*.yaml)")
    c.add_argument("--upstream_json", type=Path, required=True, help="exp/<step0|ssl>/upstream.json")
    c.add_argument("--data_dir", type=Path, required=True, help="the training data dir (utt2num_samples, text)")
    add_length_check_options(c)
    c.set_defaults(func=check_lengths)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(get_parser(), argv, "step1")


if __name__ == "__main__":
    sys.exit(main())
