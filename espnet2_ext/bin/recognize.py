"""Transcribe audio files with a packed model: SSL -> fixed layer weights -> units -> discrete ASR.

Example:
    python -m espnet2_ext.bin.recognize --model_dir egs2/demo/asr2/exp/pack/twostep \\
        --wav_scp data/test_1h/wav.scp --output hyp.txt

``--wav_scp`` holds ``utt_id path`` lines (16 kHz audio files; Kaldi pipe commands are not run).
``--output`` gets ``utt_id text`` lines in the order of the wav.scp, written atomically at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from espnet2_ext.utils.fileio import DataError, iter_kaldi_text, write_kaldi_text

logger = logging.getLogger("espnet2_ext.bin.recognize")


def read_wav_scp(path: Path) -> list[tuple[str, str]]:
    """``(utt_id, audio path)`` rows; a pipe command or a duplicate id is an error naming the line."""
    rows, seen = [], set()
    for lineno, utt, value in iter_kaldi_text(path):
        if value.rstrip().endswith("|"):
            raise DataError(f"{path}:{lineno}: '{value}' is a Kaldi pipe command; recognize reads audio files only "
                            "(write the audio to a file first)")
        if utt in seen:
            raise DataError(f"{path}:{lineno}: duplicate utterance id {utt!r}")
        seen.add(utt)
        rows.append((utt, value))
    return rows


def load_audio(utt: str, path: str, fs: int = 16000):
    """A mono float32 waveform at ``fs``; an unreadable file, another rate or several channels is an error."""
    import soundfile as sf

    try:
        wav, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:
        raise DataError(f"{utt}: cannot read audio {path} ({str(e).strip()})") from None
    if rate != fs or wav.shape[1] != 1 or len(wav) == 0:
        raise DataError(f"{utt}: {path} is {rate} Hz x {wav.shape[1]} channel(s), {len(wav)} samples; "
                        f"the model needs non-empty {fs} Hz mono audio (resample with sox)")
    return wav[:, 0]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet2_ext.bin.recognize", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", type=Path, required=True, help="a pack directory (run.sh stage 13)")
    p.add_argument("--wav_scp", type=Path, required=True, help="utt_id path lines")
    p.add_argument("--output", type=Path, required=True, help="utt_id text lines are written here")
    p.add_argument("--batch_size", type=int, default=8, help="utterances per SSL forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--beam_size", type=int, default=None, help="override the pack's decode.yaml")
    p.add_argument("--ctc_weight", type=float, default=None, help="override the pack's decode.yaml")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    if args.batch_size < 1:
        get_parser().error("--batch_size must be >= 1")
    try:
        rows = read_wav_scp(args.wav_scp)
        from espnet2_ext.inference.recognizer import Recognizer  # imports ESPnet: after the cheap checks

        overrides = {k: v for k, v in (("beam_size", args.beam_size), ("ctc_weight", args.ctc_weight)) if v is not None}
        rec = Recognizer(args.model_dir, device=args.device, **overrides)
        out: list[tuple[str, str]] = []
        with tqdm(total=len(rows), unit="utt", desc="recognize") as bar:
            for start in range(0, len(rows), args.batch_size):
                chunk = rows[start : start + args.batch_size]
                wavs = [load_audio(utt, path) for utt, path in chunk]
                out += zip([u for u, _ in chunk], rec.transcribe(wavs, [u for u, _ in chunk]))
                bar.update(len(chunk))
    except DataError as e:
        print(f"recognize: error: {e}", file=sys.stderr)
        return 1
    write_kaldi_text(args.output, out)
    logger.info("%d utterances -> %s", len(out), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
