"""A FAKE unit dump for the step-2 tests: what stages 2 and 8 would leave for one unit system.

Transcripts, unit strings, the source BPE model and the BPE tokens, in a workdir that ``./run.sh
--stage 9`` takes as it is. The units are a deterministic function of the characters (two units
per letter), so the tiny model has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from espnet2_ext.tokenizer.bpe import encode_text, train_bpe
from espnet2_ext.tokenizer.unit_text import units_to_text
from espnet2_ext.utils.fileio import write_kaldi_text

SYSTEM = "baseline"  # a name conf/units/tiny.yaml knows
SETS = {"train": 32, "dev": 8, "test_1h": 8, "dev_clean": 6}
TEST_SETS = ["test_1h", "dev_clean"]
LETTERS = "abcde"


def fake_units(text: str) -> list[int]:
    """Two units per letter, unit 10 for a space: what a perfect tokenizer of this toy language gives."""
    out: list[int] = []
    for c in text:
        out += [10] if c == " " else [2 * LETTERS.index(c), 2 * LETTERS.index(c) + 1]
    return out


def write_fake_workdir(wd: Path, systems: tuple[str, ...] = (SYSTEM,)) -> None:
    """data/<set>/{text,utt2lang,utt2num_samples} and dump/units/<system>/ as stage 8 writes it."""
    for system in systems:
        write_fake_units(wd, system)


def write_fake_units(wd: Path, system: str) -> None:
    rng = np.random.default_rng(0)
    units_dir = wd / "dump/units" / system
    for set_name, n in SETS.items():
        utts = [f"{set_name}_{'eng' if i % 2 else 'deu'}_{i:04d}" for i in range(n)]
        texts = {u: " ".join("".join(rng.choice(list(LETTERS), rng.integers(1, 4))) for _ in range(3)) for u in utts}
        data = wd / "data" / set_name
        write_kaldi_text(data / "text", texts.items())
        write_kaldi_text(data / "utt2lang", ((u, u.split("_")[-2]) for u in utts))
        write_kaldi_text(data / "utt2num_samples", ((u, "32000") for u in utts))
        write_kaldi_text(units_dir / set_name / "text", ((u, units_to_text(fake_units(t))) for u, t in texts.items()))
        (units_dir / set_name / ".done").touch()
    train_bpe(units_dir / "train/text", units_dir / "src_bpe", vocab_size=16)
    for set_name in SETS:
        encode_text(units_dir / "src_bpe/bpe.model", units_dir / set_name / "text", units_dir / set_name / "tokens")
    (units_dir / ".done").touch()


STEP2_ARGS = [
    "--unit_systems",
    SYSTEM,
    "--test_sets",
    " ".join(TEST_SETS),
    "--nj",
    "2",
    "--step2_config",
    "conf/step2/tiny.yaml",
    "--step2_decode_config",
    "conf/decode/step2_tiny.yaml",
]
