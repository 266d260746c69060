"""Stage 6 job: the learned layer weights of a step-1 run as ``layer_weights.json`` and a bar chart.

::

    python -m espnet2_ext.bin.layer_weights export --config exp/step1_step0/config.yaml \\
        --model_file exp/step1_step0/valid.loss.ave.pth --upstream_json exp/step0/upstream.json \\
        --out_json exp/step1_step0/layer_weights.json --out_png exp/step1_step0/layer_weights.png

The schema is in :mod:`espnet2_ext.frontend.layer_weights`. The SSL model is not loaded: the
logits come from the checkpoint, the number of hidden states and the SSL checkpoint's hash from
``upstream.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from espnet2_ext.bin.cli import run_subcommand

logger = logging.getLogger("layer_weights")


def cmd_export(args: argparse.Namespace) -> None:
    from espnet2_ext.frontend.layer_weights import plot, read_from_checkpoint

    layer_weights = read_from_checkpoint(args.config, args.model_file, args.upstream_json)
    layer_weights.write(args.out_json)
    if args.out_png is not None:
        plot(layer_weights, args.out_png)
    weights = layer_weights.weights
    top = max(range(len(weights)), key=weights.__getitem__)
    logger.info(
        "%s: layer weights %s (top: hidden state %d) -> %s",
        args.model_file,
        " ".join(f"{i}:{w:.3f}" for i, w in enumerate(weights)),
        top,
        args.out_json,
    )


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write layer_weights.json (and its chart) from a step-1 checkpoint")
    p.add_argument("--config", type=Path, required=True, help="the step-1 run's config.yaml")
    p.add_argument("--model_file", type=Path, required=True, help="the checkpoint (*.pth) to read the weights from")
    p.add_argument("--upstream_json", type=Path, required=True, help="upstream.json of the SSL model it was trained on")
    p.add_argument("--out_json", type=Path, required=True, help="layer_weights.json to write")
    p.add_argument("--out_png", type=Path, default=None, help="bar chart to write (PNG)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(get_parser(), argv, "layer_weights")


if __name__ == "__main__":
    sys.exit(main())
