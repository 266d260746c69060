"""Pack a step-2 system of a recipe run for audio-in decoding (run.sh stage 13).

Example:
    python -m espnet2_ext.bin.pack --workdir egs2/demo/asr2 --system twostep \\
        --out_dir egs2/demo/asr2/exp/pack/twostep --decode_config conf/decode/step2_demo.yaml

Writes the pack directory and ``<out_dir>.tar.gz``; see :mod:`espnet2_ext.inference.pack` for the layout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from espnet2_ext.inference.pack import make_pack
from espnet2_ext.utils.fileio import DataError


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == "true"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m espnet2_ext.bin.pack", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--system", required=True, help="unit system (exp/step2_<system>)")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc.ave.pth", help="checkpoint inside exp/step2_<system>/")
    p.add_argument("--decode_config", type=Path, default=None, help="beam-search options (YAML)")
    p.add_argument("--copy_ssl", type=_bool, default=True,
                   help="copy a local SSL checkpoint into the pack (false: reference its path)")
    p.add_argument("--archive", type=_bool, default=True, help="also write <out_dir>.tar.gz")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    try:
        make_pack(args.workdir, args.system, args.out_dir, model_file=args.model_file,
                  decode_config=args.decode_config, copy_ssl=args.copy_ssl, archive=args.archive)
    except DataError as e:
        print(f"pack: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
