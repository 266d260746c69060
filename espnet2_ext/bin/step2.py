"""Stage 9-10 jobs (step 2, discrete-unit ASR) around ESPnet's training and decoding.

Subcommands::

    # can CTC emit every training transcript from the encoder's frames? (fails above --max_infeasible)
    python -m espnet2_ext.bin.step2 check_lengths --config conf/step2/demo.yaml \\
        --src_tokens dump/units/twostep/train/tokens --text data/train/text --token_type char \\
        --max_infeasible 0.05 --out exp/step2_twostep/length_check.json
    # size of the source vocabulary (sentencepiece pieces): the V of the bitrate
    python -m espnet2_ext.bin.step2 vocab_size --bpemodel dump/units/twostep/src_bpe/bpe.model
    # the challenge submission files
    python -m espnet2_ext.bin.step2 submission --units_dir dump/units/twostep \\
        --decode_dir exp/step2_twostep/decode --sets test_1h dev_clean --out_dir exp/step2_twostep/submission

Training and decoding themselves are ``espnet2_ext.bin.discrete_asr_train`` and
``espnet2_ext.bin.discrete_asr_inference``, whose shards ``espnet2_ext.bin.sharded_decoding merge``
joins (see ``stage_step2`` and ``stage_decode`` in run.sh).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from espnet2_ext.scoring.submission import write_submission
from espnet2_ext.utils.fileio import DataError, atomic_write_text, listing, read_kaldi_text

logger = logging.getLogger("step2")


# ------------------------------------------------------------------ check_lengths
class EncoderFrames:
    """Encoder output frames of the step-2 model described by ``config`` as a function of input frames.

    Measured by running the configured encoder (ESPnet's class, random weights) on two probe
    lengths, so every ``input_layer`` (linear, conv1d1, conv1d2, conv2d, ...) is covered without a
    table: ``frames(T) = floor((T - offset) / subsampling)``, exact for ESPnet's subsampling layers
    up to rounding.

    Args:
        config: a training config (``encoder``, ``encoder_conf``; step 2: ``frontend_conf.embed_dim``).
        encoder_choices: the task's encoder registry (default: step 2's).
        input_size: the encoder's input dimension (default: step 2's unit embedding size).
    """

    PROBES = (256, 512)

    def __init__(self, config: dict, encoder_choices=None, input_size: int | None = None) -> None:
        import torch

        if encoder_choices is None:
            from espnet2_ext.tasks.discrete_asr import encoder_choices
        if input_size is None:
            input_size = (config.get("frontend_conf") or {}).get("embed_dim", 400)  # ESPnet's Embedding default
        encoder = encoder_choices.get_class(config["encoder"])(
            input_size=input_size, **(config.get("encoder_conf") or {})
        )
        outs = []
        with torch.no_grad():
            for t in self.PROBES:
                _, out_lens, _ = encoder.eval()(torch.zeros(1, t, input_size), torch.tensor([t]))
                outs.append(int(out_lens[0]))
        self.subsampling = (self.PROBES[1] - self.PROBES[0]) / (outs[1] - outs[0])
        self.offset = self.PROBES[0] - self.subsampling * outs[0]

    def __call__(self, input_frames: int) -> int:
        """Encoder frames for ``input_frames`` source tokens."""
        return max(int((input_frames - self.offset) / self.subsampling + 1e-6), 0)


def ctc_min_frames(tokens: list[str]) -> int:
    """Fewest frames CTC needs to emit ``tokens``: one per token plus a blank between repeats."""
    return len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:]))


def cmd_check_lengths(args: argparse.Namespace) -> int:
    import yaml
    from espnet2.text.build_tokenizer import build_tokenizer

    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    encoder_frames = EncoderFrames(config)
    subsampling = encoder_frames.subsampling
    src = read_kaldi_text(args.src_tokens, allow_empty_value=True)
    text = read_kaldi_text(args.text, allow_empty_value=True)
    missing = sorted(set(src) - set(text))
    if missing:
        raise DataError(
            f"{args.text}: no transcript for {len(missing)} utterance(s) of {args.src_tokens}: {listing(missing, 5)}"
        )
    tokenizer = build_tokenizer(
        token_type=args.token_type, bpemodel=args.bpemodel, non_linguistic_symbols=args.non_linguistic_symbols
    )
    n_src = n_tgt = 0
    infeasible = []
    for utt, pieces in tqdm(src.items(), desc="lengths", unit="utt", mininterval=5):
        frames = encoder_frames(len(pieces.split()))
        tokens = tokenizer.text2tokens(text[utt])
        n_src, n_tgt = n_src + len(pieces.split()), n_tgt + len(tokens)
        if frames < ctc_min_frames(tokens):
            infeasible.append(utt)
    fraction = len(infeasible) / max(len(src), 1)
    report = {
        "utterances": len(src),
        "encoder_subsampling": round(subsampling, 3),
        "encoder_lost_frames": round(encoder_frames.offset, 3),
        "src_tokens_per_utt": round(n_src / max(len(src), 1), 2),
        "target_tokens_per_utt": round(n_tgt / max(len(src), 1), 2),
        "target_token_type": args.token_type,
        "ctc_infeasible": len(infeasible),
        "ctc_infeasible_fraction": round(fraction, 4),
        "examples": infeasible[:5],
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    logger.info("%s", json.dumps(report))
    if fraction > args.max_infeasible:
        logger.error(
            "%.1f%% of the utterances of %s are too short for CTC: after %.3gx subsampling the encoder has fewer "
            "frames than their transcript has %s tokens (%.1f source BPE tokens vs %.1f target tokens per "
            "utterance; %s). Use fewer source BPE merges (the unit system's BPE size), an encoder input_layer "
            "with less subsampling in %s, or a coarser target (token type bpe); or raise --max_infeasible",
            100 * fraction,
            args.src_tokens,
            subsampling,
            args.token_type,
            report["src_tokens_per_utt"],
            report["target_tokens_per_utt"],
            args.out,
            args.config,
        )
        return 1
    return 0


# ------------------------------------------------------------------ tgt_bpe
def cmd_tgt_bpe(args: argparse.Namespace) -> int:
    from espnet2_ext.tokenizer.bpe import train_bpe  # the project's one sentencepiece trainer

    model = train_bpe(args.text, args.out_dir, args.vocab_size)
    logger.info("target BPE of %d pieces: %s, token list %s", args.vocab_size, model, args.out_dir / "tokens.txt")
    return 0


# ------------------------------------------------------------------ vocab_size
def source_vocabulary(bpemodel: Path) -> list[str]:
    """The pieces of a sentencepiece model, by id (the source vocabulary the units are written in)."""
    import sentencepiece as spm

    if not bpemodel.is_file():
        raise DataError(f"{bpemodel}: source BPE model not found; run stage 8 (units) first")
    sp = spm.SentencePieceProcessor(model_file=str(bpemodel))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def cmd_vocab_size(args: argparse.Namespace) -> int:
    print(len(source_vocabulary(args.bpemodel)), file=args.stdout)
    return 0


# ------------------------------------------------------------------ submission
def cmd_submission(args: argparse.Namespace) -> int:
    vocabulary = source_vocabulary(args.units_dir / "src_bpe" / "bpe.model")
    write_submission(
        out_dir=args.out_dir,
        vocabularies=[vocabulary],
        tokens={s: [args.units_dir / s / "tokens"] for s in args.sets},
        hypotheses={s: args.decode_dir / s / "text" for s in args.sets},
    )
    logger.info("submission files for %s -> %s", " ".join(args.sets), args.out_dir)
    return 0


def add_length_check_options(parser: argparse.ArgumentParser) -> None:
    """The target tokenizer, threshold and report options of a ``check_lengths`` (step 1's and step 2's)."""
    parser.add_argument("--token_type", default="char", help="target token type (ESPnet's: char, bpe, ...)")
    parser.add_argument("--bpemodel", default=None, help="target sentencepiece model (token type bpe)")
    parser.add_argument("--token_list", default=None, help="accepted for symmetry with ESPnet's options; not used")
    parser.add_argument("--non_linguistic_symbols", default=None, help="tags kept whole, e.g. [iso3] language tags")
    parser.add_argument("--max_infeasible", type=float, default=0.05, help="fail above this fraction of utterances")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet2_ext.bin.step2", description=__doc__.split("\n")[0])
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check_lengths", help="can CTC emit every transcript from the encoder's frames?")
    c.add_argument("--config", type=Path, required=True, help="step-2 training config (conf/step2/*.yaml)")
    c.add_argument("--src_tokens", type=Path, required=True, help="dump/units/<system>/<set>/tokens (BPE pieces)")
    c.add_argument("--text", type=Path, required=True, help="data/<set>/text (transcripts)")
    add_length_check_options(c)
    c.set_defaults(func=cmd_check_lengths)

    b = sub.add_parser("tgt_bpe", help="target BPE (sentencepiece) and its ESPnet token list")
    b.add_argument("--text", type=Path, required=True, help="data/<train_set>/text")
    b.add_argument("--vocab_size", type=int, required=True)
    b.add_argument("--out_dir", type=Path, required=True, help="data/token_list/tgt_bpe<N>")
    b.set_defaults(func=cmd_tgt_bpe)

    v = sub.add_parser("vocab_size", help="print the number of pieces of a sentencepiece model")
    v.add_argument("--bpemodel", type=Path, required=True)
    v.set_defaults(func=cmd_vocab_size)

    s = sub.add_parser("submission", help="challenge submission files")
    s.add_argument("--units_dir", type=Path, required=True, help="dump/units/<system> (src_bpe/, <set>/tokens)")
    s.add_argument("--decode_dir", type=Path, required=True, help="holds <set>/text")
    s.add_argument("--sets", nargs="+", required=True)
    s.add_argument("--out_dir", type=Path, required=True)
    s.set_defaults(func=cmd_submission)
    return p


def main(argv: list[str] | None = None, stdout=None) -> int:
    args = get_parser().parse_args(argv)
    args.stdout = stdout or sys.stdout
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except DataError as e:
        logger.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
