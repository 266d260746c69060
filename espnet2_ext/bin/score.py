"""Score a system's hypotheses: CER per set and language, challenge summary, bitrate.

Example:
    python -m espnet2_ext.bin.score --data_dir data --hyp_dir exp/sys/decode \\
        --sets test_1h dev_clean dev_other test_clean test_other --out_dir exp/sys/score \\
        --stream units:3000:dump/units/{set}/units.bpe

Reads ``<data_dir>/<set>/text`` (+ ``utt2lang`` if present, ``utt2num_samples`` for bitrate) and
``<hyp_dir>/<set>/text``; writes ``<out_dir>/scores.json`` and ``<out_dir>/scores.md`` and prints
the Markdown.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from espnet2_ext.scoring.bitrate import TokenStream, count_tokens
from espnet2_ext.scoring.cer import SetScore, score_set
from espnet2_ext.scoring.report import build_report, to_json, to_markdown
from espnet2_ext.utils.fileio import DataError, atomic_write_text, read_kaldi_text

logger = logging.getLogger("espnet2_ext.bin.score")


def _stream_spec(text: str) -> tuple[str, int, str]:
    """Parse ``NAME:VOCAB_SIZE:PATTERN`` (the pattern may itself contain ``:``)."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected NAME:VOCAB_SIZE:PATTERN, got {text!r}")
    name, vocab, pattern = parts
    try:
        vocab_size = int(vocab)
    except ValueError:
        raise argparse.ArgumentTypeError(f"VOCAB_SIZE must be an integer in {text!r}") from None
    if "{set}" not in pattern:
        raise argparse.ArgumentTypeError(f"PATTERN must contain {{set}} in {text!r}")
    return name, vocab_size, pattern


def get_parser() -> argparse.ArgumentParser:
    """Command-line interface of the scorer."""
    p = argparse.ArgumentParser(
        prog="python -m espnet2_ext.bin.score",
        description="CER (ML-SUPERB normalisation) per set and language, EN/ML challenge figures and bitrate.",
    )
    p.add_argument(
        "--data_dir", type=Path, required=True, help="holds <set>/text, <set>/utt2lang, <set>/utt2num_samples"
    )
    p.add_argument("--hyp_dir", type=Path, required=True, help="holds <set>/text with one hypothesis per utterance")
    p.add_argument(
        "--sets",
        nargs="+",
        required=True,
        help="evaluation sets, e.g. test_1h dev_clean dev_other test_clean test_other",
    )
    p.add_argument("--out_dir", type=Path, required=True, help="where scores.json and scores.md are written")
    p.add_argument(
        "--stream",
        type=_stream_spec,
        action="append",
        default=[],
        metavar="NAME:VOCAB_SIZE:PATTERN",
        help="a token stream the model consumes, for bitrate; PATTERN contains {set}, "
        "e.g. units:3000:dump/units/{set}/units.bpe (repeat for several streams)",
    )
    p.add_argument("--fs", type=int, default=16000, help="sampling rate of utt2num_samples (bitrate only)")
    p.add_argument(
        "--allow_missing", action="store_true", help="score utterances without a hypothesis as empty instead of failing"
    )
    p.add_argument("--system", default=None, help="label in the report (default: --hyp_dir)")
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def read_seconds(path: Path, fs: int) -> dict[str, float]:
    """Read ``utt2num_samples`` as utterance id -> seconds."""
    out = {}
    for utt, value in read_kaldi_text(path).items():
        try:
            out[utt] = int(value) / fs
        except ValueError:
            raise DataError(f"{path}: '{utt}' has {value!r}; expected an integer number of samples") from None
    return out


def score_one_set(args: argparse.Namespace, set_name: str) -> tuple[SetScore, set[str]]:
    """Read one set's reference, languages and hypotheses; return its score and reference ids."""
    set_dir = args.data_dir / set_name
    refs = read_kaldi_text(set_dir / "text", allow_empty_value=True)
    lang_path = set_dir / "utt2lang"
    utt2lang = read_kaldi_text(lang_path) if lang_path.is_file() else None
    hyp_path = args.hyp_dir / set_name / "text"
    hyps = read_kaldi_text(hyp_path, allow_empty_value=True)
    try:
        score = score_set(refs, hyps, utt2lang, set_name, allow_missing=args.allow_missing)
    except DataError as e:
        # score_set knows the set, not the files; name them so the user knows where to look.
        raise DataError(f"{e} [reference {set_dir / 'text'}, hypotheses {hyp_path}]") from None
    if score.n_missing:
        logger.warning("%s: %d utterance(s) without hypothesis scored as empty", set_name, score.n_missing)
    logger.info("%s: %d utts, CER %.2f %%", set_name, score.total.n_utts, 100 * score.total.cer)
    return score, set(refs)


def read_streams(
    args: argparse.Namespace, set_name: str, ref_ids: set[str]
) -> tuple[list[TokenStream], dict[str, float]]:
    """Read one set's token counts per stream and its durations, checking they match the reference."""
    dur_path = args.data_dir / set_name / "utt2num_samples"
    seconds = read_seconds(dur_path, args.fs)
    if set(seconds) != ref_ids:
        raise DataError(
            f"{dur_path}: utterances differ from {args.data_dir / set_name / 'text'} "
            f"({len(ref_ids - set(seconds))} missing, {len(set(seconds) - ref_ids)} extra)"
        )
    streams = []
    for name, vocab_size, pattern in args.stream:
        path = Path(pattern.replace("{set}", set_name))
        counts = count_tokens(path)
        if set(counts) != ref_ids:
            raise DataError(
                f"{path}: utterances differ from {args.data_dir / set_name / 'text'} "
                f"({len(ref_ids - set(counts))} missing, {len(set(counts) - ref_ids)} extra)"
            )
        streams.append(TokenStream(counts, vocab_size, name))
    return streams, seconds


def main(argv: list[str] | None = None) -> int:
    """Run the scorer; returns the process exit status."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.fs <= 0:
        get_parser().error("--fs must be positive")
    try:
        scores, ref_ids = [], {}
        for s in args.sets:
            score, ref_ids[s] = score_one_set(args, s)
            scores.append(score)
        streams = utt2seconds = None
        if args.stream:
            streams, utt2seconds = {}, {}
            for s in args.sets:
                streams[s], utt2seconds[s] = read_streams(args, s, ref_ids[s])
        report = build_report(scores, streams, utt2seconds, system=args.system or str(args.hyp_dir))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    markdown = to_markdown(report)
    atomic_write_text(args.out_dir / "scores.json", to_json(report))
    atomic_write_text(args.out_dir / "scores.md", markdown)
    logger.info("wrote %s and %s", args.out_dir / "scores.json", args.out_dir / "scores.md")
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
