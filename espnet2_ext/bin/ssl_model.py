"""Stage 3 jobs: the SSL model every later stage builds on.

Subcommands::

    # demo only: espeak-ng IPA targets, then pre-training of the small wav2vec2 (phoneme CTC; optionally
    # on a middle layer, with masked MFCC-class prediction on top: conf/ssl/demo_ssl_midlayer.yaml)
    python -m espnet2_ext.bin.ssl_model phonemes --data_dir data/train --out exp/ssl_pretrain/train.ipa
    python -m espnet2_ext.bin.ssl_model pretrain --config conf/ssl/demo_ssl.yaml \\
        --train_dir data/train --valid_dir data/dev --labels_dir exp/ssl_pretrain --out_dir exp/ssl_pretrain
    # demo and real data: load the upstream once, run it, record what it is
    python -m espnet2_ext.bin.ssl_model check --name xls_r_300m [--path P] [--cache_dir C] --out exp/ssl/upstream.json
    # is the SSL model any good? a CTC probe per hidden state vs MFCC k-means units
    python -m espnet2_ext.bin.ssl_model probe --upstream_json exp/ssl/upstream.json \\
        --train_dir data/train --test_dir data/test_1h --out exp/ssl/probe.json

``check`` writes ``upstream.json``: the upstream spec (how to load it), its SHA-256, number of
hidden states, hidden size and frame rate. Later stages read the upstream from that file only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from espnet2_ext.bin.cli import run_subcommand
from espnet2_ext.utils.fileio import DataError, atomic_write_text, read_kaldi_text, write_kaldi_text

logger = logging.getLogger("ssl_model")


def cmd_phonemes(args: argparse.Namespace) -> None:
    from espnet2_ext.data.demo_corpus import KNOWN_LANGUAGES
    from espnet2_ext.ssl.phonemes import transcribe

    voices = {iso: spec.espeak[0] for iso, spec in KNOWN_LANGUAGES.items()}
    texts = read_kaldi_text(args.data_dir / "text")
    labels = transcribe(texts, read_kaldi_text(args.data_dir / "utt2lang"), voices, workers=args.workers)
    write_kaldi_text(args.out, labels.items())
    logger.info("wrote %s: %d utterances", args.out, len(labels))


def cmd_pretrain(args: argparse.Namespace) -> None:
    import yaml

    from espnet2_ext.ssl.pretrain_demo import TrainConfig, pretrain

    conf = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    unknown = set(conf) - {"model", "train"}
    if unknown:
        raise DataError(f"{args.config}: unknown section(s) {sorted(unknown)}; expected 'model' and 'train'")
    try:
        train_conf = TrainConfig(**(conf.get("train") or {}))
    except TypeError as e:
        raise DataError(f"{args.config}: section 'train': {e}") from None
    log = pretrain(
        conf["model"],
        train_conf,
        args.train_dir,
        args.valid_dir,
        read_kaldi_text(args.labels_dir / f"{args.train_dir.name}.ipa"),
        read_kaldi_text(args.labels_dir / f"{args.valid_dir.name}.ipa"),
        args.out_dir,
    )
    atomic_write_text(args.out_dir / ".done", "")
    logger.info("pre-training done: dev PER %.3f after %.1f min", log["dev_per"], log["seconds"] / 60)


def cmd_check(args: argparse.Namespace) -> None:
    import torch

    from espnet2_ext.ssl.upstream import SSLUpstream, UpstreamSpec

    spec = UpstreamSpec(args.name, path=str(args.path.resolve()) if args.path else None,
                        cache_dir=str(args.cache_dir.resolve()) if args.cache_dir else None)
    upstream = SSLUpstream(spec, frozen=True)
    states, lens = upstream(torch.zeros(1, 16000), torch.tensor([16000]))
    info = {**upstream.provenance(), "frame_rate_hz": upstream.frame_rate_hz, "frames_per_second_check": int(lens[0])}
    if len(states) != upstream.num_hidden_states:
        raise DataError(f"{spec}: returned {len(states)} hidden states, expected {upstream.num_hidden_states}")
    atomic_write_text(args.out, json.dumps(info, indent=2) + "\n")
    logger.info("upstream %s: %d hidden states x %d dims, %.0f frames/s -> %s", spec.name,
                upstream.num_hidden_states, upstream.hidden_size, upstream.frame_rate_hz, args.out)


def cmd_probe(args: argparse.Namespace) -> None:
    from espnet2_ext.ssl.probe import DEFAULT_EPOCHS, ProbeConfig, run_probe, write_report

    if not args.upstream_json.is_file():
        raise DataError(f"{args.upstream_json}: not found; run 'ssl_model check' first")
    try:
        info = json.loads(args.upstream_json.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{args.upstream_json}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("upstream"), dict):
        raise DataError(f"{args.upstream_json}: expected an object with an 'upstream' spec (written by 'ssl_model check')")
    config = ProbeConfig(seed=args.seed, device=args.device)
    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    result = run_probe(info["upstream"], args.train_dir, args.test_dir, layers=args.layers, mfcc_k=args.mfcc_k,
                       epochs=epochs, max_train_utts=args.max_train_utts, config=config)
    if info.get("sha256") and info["sha256"] != result["upstream"]["sha256"]:
        logger.warning("%s records checkpoint sha256 %s but the loaded model has %s: the checkpoint changed since "
                       "'check'", args.upstream_json, info["sha256"][:12], result["upstream"]["sha256"][:12])
    md = write_report(result, args.out)
    best = result["best"]
    logger.info("best hidden state %d: CER %.1f%%; MFCC units: %s -> %s, %s", best["layer"], 100 * best["cer"],
                "-" if result["mfcc_units_cer"] is None else f"{100 * result['mfcc_units_cer']:.1f}%", args.out, md)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("phonemes", help="espeak-ng IPA transcripts of a demo data dir")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir with text and utt2lang")
    p.add_argument("--out", type=Path, required=True, help="output Kaldi text file (utt IPA)")
    p.add_argument("--workers", type=int, default=2, help="espeak-ng processes at once")
    p.set_defaults(func=cmd_phonemes)
    p = sub.add_parser("pretrain", help="pre-training of the demo SSL model (phoneme CTC, optionally + masked prediction)")
    p.add_argument("--config", type=Path, required=True, help="YAML with 'model' (Wav2Vec2Config) and 'train'")
    p.add_argument("--train_dir", type=Path, required=True)
    p.add_argument("--valid_dir", type=Path, required=True)
    p.add_argument("--labels_dir", type=Path, required=True, help="holds <set>.ipa from the phonemes step")
    p.add_argument("--out_dir", type=Path, required=True)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("check", help="load an upstream, run it once, write upstream.json")
    p.add_argument("--name", required=True, help="s3prl upstream name (xls_r_300m, hf_wav2vec2_custom, ...)")
    p.add_argument("--path", type=Path, default=None, help="local checkpoint file or directory")
    p.add_argument("--cache_dir", type=Path, default=None, help="s3prl download cache for hub names")
    p.add_argument("--out", type=Path, required=True, help="upstream.json to write")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("probe", help="CTC probe per hidden state vs MFCC k-means units; writes probe.json/.md")
    p.add_argument("--upstream_json", type=Path, required=True, help="upstream.json from the check step")
    p.add_argument("--train_dir", type=Path, required=True, help="Kaldi data dir the probes train on")
    p.add_argument("--test_dir", type=Path, required=True, help="Kaldi data dir the probes are scored on")
    p.add_argument("--out", type=Path, required=True, help="probe.json to write (probe.md beside it)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs per probe (default: espnet2_ext.ssl.probe.DEFAULT_EPOCHS)")
    p.add_argument("--max_train_utts", type=int, default=None, help="probe on a seeded random train subset")
    p.add_argument("--mfcc_k", type=int, default=100, help="k-means K of the MFCC-unit row (0: skip it)")
    p.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(get_parser(), argv, "ssl_model")


if __name__ == "__main__":
    sys.exit(main())
