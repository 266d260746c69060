"""Challenge submission files: input vocabulary, units per utterance, hypotheses.

The Interspeech 2024 Discrete Speech Unit Challenge asks, per system, for the vocabulary of every
token stream the ASR model consumes, the tokens of every evaluation utterance (a list per stream)
and the hypotheses (METHOD.md section 2). Layout written by :func:`write_submission`::

    <out_dir>/vocab.json          {"0": [token, ...], "1": [...]}   stream index -> vocabulary
    <out_dir>/<set>/units.json    {"utt": [[token, ...], ...]}       one list per stream, by utterance
    <out_dir>/<set>/text          utt hypothesis                     (the recipe's decode/<set>/text)

Example:
    >>> write_submission(Path("sub"), [["a", "b"]], {"test": [Path("test/tokens")]},  # doctest: +SKIP
    ...                  {"test": Path("decode/test/text")})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from espnet2_ext.utils.fileio import (
    DataError,
    atomic_write_text,
    iter_kaldi_text,
    listing,
    read_kaldi_text,
    write_kaldi_text,
)


def read_stream(path: Path, vocabulary: set[str]) -> dict[str, list[str]]:
    """``utt tok tok ...`` lines as utterance -> tokens, every token checked against ``vocabulary``.

    Raises:
        DataError: naming ``path:line`` for a token outside the vocabulary (units dumped with
            another BPE model) or a duplicate utterance.
    """
    out: dict[str, list[str]] = {}
    for lineno, utt, value in iter_kaldi_text(path, allow_empty_value=True):
        tokens = value.split()
        unknown = [t for t in tokens if t not in vocabulary]
        if unknown:
            raise DataError(
                f"{path}:{lineno}: token {unknown[0]!r} is not in the stream's vocabulary; "
                "were the units tokenised with another BPE model? Rerun stage 8 (units)"
            )
        if utt in out:
            raise DataError(f"{path}:{lineno}: duplicate utterance '{utt}'")
        out[utt] = tokens
    return out


def write_submission(
    out_dir: Path,
    vocabularies: Sequence[Sequence[str]],
    tokens: Mapping[str, Sequence[Path]],
    hypotheses: Mapping[str, Path],
) -> None:
    """Write the submission files of one system (layout in the module docstring).

    Args:
        out_dir: where the files go (created).
        vocabularies: the vocabulary of each stream, in stream order.
        tokens: set -> one ``utt tok tok ...`` file per stream (the tokens the model consumes).
        hypotheses: set -> ``utt text`` file.

    Raises:
        DataError: a set's streams and hypotheses do not cover the same utterances, or a token is
            outside its stream's vocabulary.
    """
    atomic_write_text(
        out_dir / "vocab.json",
        json.dumps({str(i): list(v) for i, v in enumerate(vocabularies)}, ensure_ascii=False) + "\n",
    )
    for set_name, paths in tokens.items():
        if len(paths) != len(vocabularies):
            raise ValueError(f"{set_name}: {len(paths)} token streams for {len(vocabularies)} vocabularies")
        streams = [read_stream(p, set(v)) for p, v in zip(paths, vocabularies)]
        hyps = read_kaldi_text(hypotheses[set_name], allow_empty_value=True)
        for path, stream in zip(paths, streams):
            differ = sorted(set(stream) ^ set(hyps))
            if differ:
                raise DataError(
                    f"{path} and {hypotheses[set_name]}: {len(differ)} utterance(s) in only one of them "
                    f"({listing(differ, 5)}); decode the set again"
                )
        units = {utt: [stream[utt] for stream in streams] for utt in sorted(hyps)}
        atomic_write_text(out_dir / set_name / "units.json", json.dumps(units, ensure_ascii=False) + "\n")
        write_kaldi_text(out_dir / set_name / "text", ((u, hyps[u]) for u in sorted(hyps)))
