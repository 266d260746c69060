"""An offline multilingual demo corpus in the real ML-SUPERB and LibriSpeech on-disk layouts.

Sentences of random words (``wordfreq`` frequency lists, filtered to the language's own script)
are spoken by ``espeak-ng`` with a voice variant, rate and pitch drawn per utterance, resampled
to 16 kHz mono 16-bit by ``sox`` and written as::

    DIR/mlsuperb/<dataset>/<iso3>/wav/<dataset>_<iso3>_<nnnnnn>.wav
    DIR/mlsuperb/<dataset>/<iso3>/transcript_{1h_train,10min_train,10min_dev,10min_test}.txt
    DIR/LibriSpeech/<set>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac (+ <spk>-<chapter>.trans.txt)

The work is split in three resumable steps, each reading the previous step's files:

1. :func:`make_plan` draws every utterance (text, voice, rate, pitch, output path) from the
   config and a seed into ``DIR/.plan/utts.jsonl``;
2. :func:`synth_shard` synthesises the utterances of one shard, skipping finished files;
3. :func:`finalize` checks that all audio exists, writes the transcripts, ``corpus_stats.json``
   and, last, ``DIR/.done``.

Every output file is written atomically, so a killed job never leaves a file that looks done.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from tqdm import tqdm

from espnet2_ext.utils.fileio import (
    DataError,
    atomic_open,
    atomic_write_text,
    remove_stale_temp_files,
    write_kaldi_text,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Output sampling rate of every audio file (Hz)."""

MLSUPERB_SPLITS = ("1h_train", "10min_train", "10min_dev", "10min_test")
"""ML-SUPERB transcript names: ``transcript_<split>.txt``; 10min_train is a subset of 1h_train."""

LIBRISPEECH_SETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)

PLAN_DIR = ".plan"
DONE_FILE = ".done"
STATS_FILE = "corpus_stats.json"

_SCRIPTS = ("Latin", "Cyrillic", "Greek", "Devanagari", "Arabic", "Hebrew", "Armenian", "Georgian", "Bengali", "Tamil")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ISO3_RE = re.compile(r"^[a-z]{3}$")
_MIN_VOCABULARY = 100  # a language with fewer usable words is a config problem, not a corpus


@dataclass(frozen=True)
class LanguageSpec:
    """How to write and speak one language.

    Attributes:
        iso3: ISO 639-3 code used in ML-SUPERB paths and utterance ids (``eng``).
        wordfreq: ``wordfreq`` language code of the word list (``en``).
        espeak: espeak-ng voice names (languages) to draw from per utterance (``en-us``).
        script: Unicode script every character of a word must belong to (``Latin``).
        alphabet: if set, the only characters (lower case) a word may contain.
    """

    iso3: str
    wordfreq: str
    espeak: tuple[str, ...]
    script: str
    alphabet: str | None = None


_LATIN = "abcdefghijklmnopqrstuvwxyz"
KNOWN_LANGUAGES: dict[str, LanguageSpec] = {
    spec.iso3: spec
    for spec in (
        # Each entry was checked with espeak-ng 1.51: plausible durations and no language switch
        # (espeak's "(en)" marker) on the filtered top-3000 words. Mandarin is broken in 1.51.
        LanguageSpec("eng", "en", ("en-us", "en-gb"), "Latin", _LATIN),
        LanguageSpec("deu", "de", ("de",), "Latin", _LATIN + "äöüß"),
        LanguageSpec("spa", "es", ("es", "es-419"), "Latin", _LATIN + "áéíóúüñ"),
        LanguageSpec("fra", "fr", ("fr-fr",), "Latin", _LATIN + "àâæçéèêëîïôœùûüÿ"),
        LanguageSpec("ita", "it", ("it",), "Latin", _LATIN + "àèéìíîòóùú"),
        LanguageSpec("nld", "nl", ("nl",), "Latin", _LATIN + "éèëïöü"),
        LanguageSpec("pol", "pl", ("pl",), "Latin", _LATIN + "ąćęłńóśźż"),
        LanguageSpec("rus", "ru", ("ru",), "Cyrillic", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
        LanguageSpec("bul", "bg", ("bg",), "Cyrillic", "абвгдежзийклмнопрстуфхцчшщъьюя"),
        LanguageSpec("ukr", "uk", ("uk",), "Cyrillic", "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя"),
        LanguageSpec("hin", "hi", ("hi",), "Devanagari"),
        LanguageSpec("ara", "ar", ("ar",), "Arabic", "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي"),
        LanguageSpec("fas", "fa", ("fa",), "Arabic", "ءآأؤئابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی"),
        LanguageSpec("ell", "el", ("el",), "Greek", "αβγδεζηθικλμνξοπρστυφχψωςάέήίόύώϊϋΐΰ"),
    )
}


@dataclass(frozen=True)
class Utterance:
    """One planned utterance.

    Attributes:
        index: position in the plan (shard ``J`` of ``N`` holds ``index % N == J - 1``).
        utt_id: ``<dataset>_<iso3>_<nnnnnn>`` (ML-SUPERB) or ``<spk>-<chapter>-<nnnn>`` (LibriSpeech).
        corpus: ``mlsuperb`` or ``librispeech``.
        splits: ML-SUPERB transcript splits holding it, or the LibriSpeech set name.
        dataset: ML-SUPERB dataset or LibriSpeech set.
        lang: ISO 639-3 code.
        speaker: LibriSpeech speaker id (``""`` for ML-SUPERB).
        chapter: LibriSpeech chapter id (``""`` for ML-SUPERB).
        voice: espeak-ng voice (language) name.
        variant: espeak-ng voice variant (``m3``, ``f2``, ``klatt4``...).
        rate: speaking rate (words per minute).
        pitch: espeak-ng pitch (0-99).
        text: the transcript (what is spoken, in the case it is written to the transcript).
        path: audio file relative to the corpus root.
    """

    index: int
    utt_id: str
    corpus: str
    splits: tuple[str, ...]
    dataset: str
    lang: str
    speaker: str
    chapter: str
    voice: str
    variant: str
    rate: int
    pitch: int
    text: str
    path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Utterance:
        d = json.loads(line)
        d["splits"] = tuple(d["splits"])
        return cls(**d)


# --------------------------------------------------------------------------------------------
# external tools


@functools.lru_cache(maxsize=1)
def espeak_inventory() -> tuple[frozenset[str], frozenset[str]]:
    """Return ``(voices, variants)`` known to the installed espeak-ng.

    espeak-ng silently ignores an unknown ``+variant`` and falls back on an unknown voice, so the
    config is validated against these lists instead of trusting its exit status.
    """
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise DataError(f"'{tool}' not found on PATH; install it (apt-get install -y espeak-ng sox)")
    version = _run(["espeak-ng", "--version"], what="espeak-ng --version")
    m = re.search(r"Data at:\s*(\S+)", version)
    if not m:
        raise DataError(f"cannot find the data directory in 'espeak-ng --version' output: {version.strip()!r}")
    voices_out = _run(["espeak-ng", "--voices"], what="espeak-ng --voices")
    voices = frozenset(line.split()[1].lower() for line in voices_out.splitlines()[1:] if len(line.split()) > 1)
    variant_dir = Path(m.group(1)) / "voices" / "!v"
    variants = frozenset(p.name for p in variant_dir.iterdir() if p.is_file()) if variant_dir.is_dir() else frozenset()
    if not variants:
        raise DataError(f"{variant_dir}: no espeak-ng voice variants found; is espeak-ng-data installed?")
    return voices, variants


def _run(cmd: Sequence[str], what: str, input_text: str | None = None, binary: bool = False) -> Any:
    """Run ``cmd`` (argv list, no shell); raise ``RuntimeError`` naming ``what``, the command and stderr."""
    try:
        proc = subprocess.run(list(cmd), input=input_text, capture_output=True, text=not binary, check=False)
    except OSError as e:
        raise RuntimeError(f"{what}: cannot run {list(cmd)}: {e}") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace") if binary else proc.stderr
        raise RuntimeError(f"{what}: command {list(cmd)} failed with exit status {proc.returncode}: {stderr.strip()}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# text


def word_in_script(word: str, script: str, alphabet: str | None = None) -> bool:
    """True if ``word`` consists only of letters (and combining marks) of ``script``.

    Digits, punctuation, apostrophes, joiners and letters of other scripts make it False; with
    ``alphabet`` every (NFC, lower-cased) character must also be one of its characters.

    Example:
        >>> word_in_script("привет", "Cyrillic"), word_in_script("hello", "Cyrillic")
        (True, False)
    """
    word = unicodedata.normalize("NFC", word)
    if not word:
        return False
    prefix = script.upper() + " "
    for c in word:
        if unicodedata.category(c)[0] not in "LM" or not unicodedata.name(c, "").startswith(prefix):
            return False
    return alphabet is None or all(c in alphabet for c in word.lower())


def _espeak_foreign_words(voice: str, words: Sequence[str]) -> set[str]:
    """Words espeak-ng reads in another language (its phoneme output shows a ``(xx)`` switch).

    Each word is its own clause, so espeak-ng prints one phoneme line per word.
    """
    out = _run(
        ["espeak-ng", "-q", "-x", "-v", voice],
        what=f"espeak-ng phonemes ({voice})",
        input_text="\n".join(w + "." for w in words),
    )
    lines = [line for line in out.splitlines() if line.strip()]
    if len(lines) != len(words):
        raise DataError(
            f"espeak-ng -x -v {voice}: got {len(lines)} phoneme lines for {len(words)} words; "
            f"cannot check the word list of this voice"
        )
    return {w for w, ph in zip(words, lines) if "(" in ph}


@functools.lru_cache(maxsize=64)
def vocabulary(spec: LanguageSpec, top_n: int, min_chars: int, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The usable words among the ``top_n`` most frequent of a language, in frequency order.

    A word is kept if it has at least ``min_chars`` characters, is written only in the language's
    script/alphabet, is not in ``exclude``, and every espeak-ng voice of the language reads it in
    the language itself (not as an English loanword or as letter names).
    """
    import wordfreq  # heavy data; only needed when planning

    words = [
        _final_forms(unicodedata.normalize("NFC", w), spec.script) for w in wordfreq.top_n_list(spec.wordfreq, top_n)
    ]
    words = [
        w for w in words if len(w) >= min_chars and word_in_script(w, spec.script, spec.alphabet) and w not in exclude
    ]
    words = list(dict.fromkeys(words))
    foreign = set().union(*(_espeak_foreign_words(voice, words) for voice in spec.espeak)) if words else set()
    kept = tuple(w for w in words if w not in foreign)
    logger.info(
        "%s: %d of the top %d %s words usable (%d read as another language by espeak-ng)",
        spec.iso3,
        len(kept),
        top_n,
        spec.wordfreq,
        len(foreign),
    )
    if len(kept) < _MIN_VOCABULARY:
        raise DataError(
            f"language {spec.iso3}: only {len(kept)} usable words among the top {top_n} "
            f"'{spec.wordfreq}' words (need {_MIN_VOCABULARY}); check its script/alphabet or raise top_n"
        )
    return kept


def _final_forms(word: str, script: str) -> str:
    """Restore the Greek word-final sigma that ``wordfreq``'s case folding turns into medial ``σ``."""
    return word[:-1] + "ς" if script == "Greek" and word.endswith("σ") else word


def random_sentence(rng: random.Random, words: Sequence[str], min_words: int, max_words: int) -> str:
    """A sentence of ``min_words``..``max_words`` distinct words drawn uniformly from ``words``."""
    n = rng.randint(min_words, max_words)
    return " ".join(rng.sample(list(words), n))


# --------------------------------------------------------------------------------------------
# config


def _rng(seed: int, *keys: object) -> random.Random:
    """A generator seeded by ``seed`` and ``keys`` only, so adding a language leaves others unchanged."""
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class _Section:
    """A config mapping read key by key; unknown keys are reported with the config path."""

    def __init__(self, data: Any, where: str, source: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DataError(f"{source}: '{where}' must be a mapping, got {type(data).__name__}")
        self.data, self.where, self.source, self.used = data, where, source, set()

    def err(self, key: str, msg: str) -> DataError:
        return DataError(f"{self.source}: {self.where + '.' if self.where else ''}{key}: {msg}")

    def get(self, key: str, default: Any = ..., kind: type | tuple[type, ...] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.err(key, "missing")
            return default
        value = self.data[key]
        if kind is not None:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            # YAML's true/false are ints to isinstance; reject them where a number is expected
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                names = " or ".join(k.__name__ for k in kinds)
                raise self.err(key, f"expected {names}, got {value!r}")
        return value

    def sub(self, key: str, default: Any = ...) -> _Section:
        return _Section(self.get(key, default), f"{self.where + '.' if self.where else ''}{key}", self.source)

    def range(self, key: str, lo: int, hi: int, default: Any = ...) -> list[int]:
        value = self.get(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) for v in value)
            or not lo <= value[0] <= value[1] <= hi
        ):
            raise self.err(key, f"expected [min, max] integers within {lo}..{hi}, got {value!r}")
        return [int(value[0]), int(value[1])]

    def count(self, key: str, minimum: int = 1, default: Any = ...) -> int:
        value = self.get(key, default, int)
        if value < minimum:
            raise self.err(key, f"must be >= {minimum}, got {value}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.err(unknown[0], f"unknown key (known: {', '.join(sorted(self.used))})")


def _language(entry: Any, where: str, source: str) -> LanguageSpec:
    """Resolve a language entry: an ISO 639-3 code from :data:`KNOWN_LANGUAGES` or a full mapping."""
    import wordfreq

    if isinstance(entry, str):
        if entry not in KNOWN_LANGUAGES:
            raise DataError(
                f"{source}: {where}: unknown language code '{entry}'; known codes: "
                f"{', '.join(sorted(KNOWN_LANGUAGES))} (or give a mapping with iso3, wordfreq, espeak, script)"
            )
        spec = KNOWN_LANGUAGES[entry]
    else:
        sec = _Section(entry, where, source)
        espeak = sec.get("espeak", kind=(str, list))
        if not espeak or not all(isinstance(v, str) for v in espeak if isinstance(espeak, list)):
            raise sec.err("espeak", f"expected a voice name or a non-empty list of them, got {espeak!r}")
        spec = LanguageSpec(
            iso3=sec.get("iso3", kind=str),
            wordfreq=sec.get("wordfreq", kind=str),
            espeak=(espeak,) if isinstance(espeak, str) else tuple(espeak),
            script=sec.get("script", kind=str),
            alphabet=sec.get("alphabet", None, (str, type(None))),
        )
        sec.done()
    if not _ISO3_RE.match(spec.iso3):
        raise DataError(f"{source}: {where}: iso3 '{spec.iso3}' must be three lower-case letters")
    available = wordfreq.available_languages()
    if spec.wordfreq not in available:
        # wordfreq itself would silently fall back to another language's list
        raise DataError(
            f"{source}: {where}: language '{spec.iso3}': wordfreq has no language code '{spec.wordfreq}'; "
            f"available: {', '.join(sorted(available))}"
        )
    if spec.script not in _SCRIPTS:
        raise DataError(
            f"{source}: {where}: language '{spec.iso3}': unknown script '{spec.script}'; known: {', '.join(_SCRIPTS)}"
        )
    voices, _ = espeak_inventory()
    for voice in spec.espeak:
        if not isinstance(voice, str) or voice.lower() not in voices:
            raise DataError(
                f"{source}: {where}: language '{spec.iso3}': espeak-ng has no voice {voice!r} "
                f"(see 'espeak-ng --voices')"
            )
    return spec


def _voice_params(sec: _Section) -> dict[str, Any]:
    _, known_variants = espeak_inventory()
    variants = sec.get("variants", kind=list)
    if not variants:
        raise sec.err("variants", "needs at least one espeak-ng variant")
    for v in variants:
        if v not in known_variants:
            raise sec.err("variants", f"espeak-ng has no variant {v!r} (see espeak-ng-data/voices/!v)")
    return {"variants": list(variants), "rate": sec.range("rate", 80, 450), "pitch": sec.range("pitch", 0, 99)}


def resolve_config(raw: dict, seed: int | None = None, source: str = "<config>") -> dict:
    """Validate a corpus config and fill in defaults; the result alone determines the plan.

    Args:
        raw: the parsed YAML (see ``conf/corpus/demo.yaml`` for the keys).
        seed: overrides the config's ``seed`` when given.
        source: name of the config file, used in error messages.

    Returns:
        A plain dict (JSON/YAML serialisable) with every language fully specified.

    Raises:
        DataError: naming the config file and key that is wrong.
    """
    top = _Section(copy.deepcopy(raw), "", source)
    cfg_seed = top.get("seed", 0, int)
    out: dict[str, Any] = {"seed": int(seed if seed is not None else cfg_seed)}
    out["max_seconds"] = float(top.get("max_seconds", 20.0, (int, float)))
    if out["max_seconds"] <= 1.0:
        raise top.err("max_seconds", f"must be > 1 (seconds), got {out['max_seconds']}")

    text = top.sub("text", {})
    out["text"] = {
        "top_n": text.count("top_n", 200, 3000),
        "min_chars": text.count("min_chars", 1, 2),
        "words": text.range("words", 1, 50, [4, 10]),
    }
    exclude = text.sub("exclude", {})
    out["text"]["exclude"] = {}
    for iso in exclude.data:
        words = exclude.get(iso, kind=list)
        if not all(isinstance(w, str) for w in words):
            raise exclude.err(iso, "expected a list of words")
        out["text"]["exclude"][iso] = sorted(unicodedata.normalize("NFC", w) for w in words)
    text.done()

    languages: dict[str, dict] = {}

    def add_language(entry: Any, where: str) -> str:
        spec = _language(entry, where, source)
        if spec.iso3 in languages and languages[spec.iso3] != _spec_dict(spec):
            raise DataError(f"{source}: {where}: language '{spec.iso3}' defined twice differently")
        languages[spec.iso3] = _spec_dict(spec)
        return spec.iso3

    ml = top.sub("mlsuperb")
    ml_langs = [add_language(e, f"mlsuperb.languages[{i}]") for i, e in enumerate(ml.get("languages", kind=list))]
    if not ml_langs or len(set(ml_langs)) != len(ml_langs):
        raise ml.err("languages", "needs at least one language, each listed once")
    counts = ml.sub("utterances")
    utts = {split: counts.count(split) for split in MLSUPERB_SPLITS}
    counts.done()
    if utts["10min_train"] > utts["1h_train"]:
        raise counts.err("10min_train", "must not exceed 1h_train (it is a subset of it)")
    datasets_sec = ml.sub("datasets")
    datasets: dict[str, dict] = {}
    for name in datasets_sec.data:
        if not isinstance(name, str) or not _DATASET_RE.match(name):
            raise datasets_sec.err(str(name), "dataset names use letters, digits, '-', '_' and '.' only")
        ds = datasets_sec.sub(name)
        ds_langs = ds.get("languages", list(ml_langs), list)
        if not ds_langs or len(set(ds_langs)) != len(ds_langs):
            raise ds.err("languages", "needs at least one language, each listed once")
        for lang in ds_langs:
            if lang not in ml_langs:
                raise ds.err("languages", f"'{lang}' is not in mlsuperb.languages ({', '.join(ml_langs)})")
        datasets[name] = {"languages": list(ds_langs), **_voice_params(ds)}
        ds.done()
    datasets_sec.used.update(datasets_sec.data)
    if not datasets:
        raise ml.err("datasets", "needs at least one dataset")
    ml.done()
    out["mlsuperb"] = {"languages": ml_langs, "utterances": utts, "datasets": datasets}

    ls_raw = top.get("librispeech", None)
    out["librispeech"] = None
    if ls_raw is not None:
        ls = top.sub("librispeech")
        lang = add_language(ls.get("language", "eng"), "librispeech.language")
        sets_sec = ls.sub("sets")
        sets: dict[str, dict] = {}
        for name in sets_sec.data:
            if name not in LIBRISPEECH_SETS:
                raise sets_sec.err(str(name), f"not a LibriSpeech set name ({', '.join(LIBRISPEECH_SETS)})")
            s = sets_sec.sub(name)
            sets[name] = {
                "speakers": s.count("speakers"),
                "chapters": s.count("chapters"),
                "utterances": s.count("utterances"),
                **_voice_params(s),
            }
            s.done()
        sets_sec.used.update(sets_sec.data)
        train_variants = {v for n, s in sets.items() if n.startswith("train") for v in s["variants"]}
        for n, s in sets.items():
            shared = sorted(train_variants & set(s["variants"]))
            if "other" in n and not n.startswith("train") and shared:
                raise sets_sec.err(
                    n, f"an 'other' set must use variants unseen in training; {shared} are used by a train set"
                )
        if not any(n.startswith("train") for n in sets) or not any(not n.startswith("train") for n in sets):
            raise ls.err("sets", "needs at least one train set and one dev/test set")
        ls.done()
        out["librispeech"] = {"language": lang, "sets": sets}
    top.done()
    for iso in out["text"]["exclude"]:
        if iso not in languages:
            raise exclude.err(iso, f"not one of the corpus languages ({', '.join(languages)})")
    out["languages"] = languages
    return out


def _spec_dict(spec: LanguageSpec) -> dict:
    d = asdict(spec)
    d["espeak"] = list(spec.espeak)
    return d


def _spec(d: dict) -> LanguageSpec:
    return LanguageSpec(**{**d, "espeak": tuple(d["espeak"])})


def load_config(path: str | os.PathLike, seed: int | None = None) -> dict:
    """Read and resolve a YAML corpus config (see :func:`resolve_config`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML: {e}") from None
    return resolve_config(raw, seed=seed, source=str(path))


# --------------------------------------------------------------------------------------------
# plan


def build_plan(config: dict) -> list[Utterance]:
    """Draw every utterance of the corpus from a resolved config; deterministic in ``config``."""
    seed = config["seed"]
    text = config["text"]
    lo_words, hi_words = text["words"]
    langs = {iso: _spec(d) for iso, d in config["languages"].items()}

    def words_of(spec: LanguageSpec) -> tuple[str, ...]:
        return vocabulary(spec, text["top_n"], text["min_chars"], tuple(text["exclude"].get(spec.iso3, ())))

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:  # espeak checks run in parallel
        vocab = dict(zip(langs, pool.map(words_of, langs.values())))

    rows: list[dict] = []
    ml = config["mlsuperb"]
    n = ml["utterances"]
    for dataset, ds in ml["datasets"].items():
        for iso in ds["languages"]:
            spec, rng, seen = langs[iso], _rng(seed, "mlsuperb", dataset, iso), set()
            order = ["1h_train"] * n["1h_train"] + ["10min_dev"] * n["10min_dev"] + ["10min_test"] * n["10min_test"]
            ten_min = set(rng.sample(range(n["1h_train"]), n["10min_train"]))  # indices of 1h_train utterances
            for k, split in enumerate(order):
                sentence = _unique_sentence(rng, vocab[iso], lo_words, hi_words, seen)
                utt_id = f"{dataset}_{iso}_{k:06d}"
                rows.append(
                    {
                        "utt_id": utt_id,
                        "corpus": "mlsuperb",
                        "splits": (split, "10min_train") if split == "1h_train" and k in ten_min else (split,),
                        "dataset": dataset,
                        "lang": iso,
                        "speaker": "",
                        "chapter": "",
                        "voice": rng.choice(spec.espeak),
                        "variant": rng.choice(ds["variants"]),
                        "rate": rng.randint(*ds["rate"]),
                        "pitch": rng.randint(*ds["pitch"]),
                        "text": sentence,
                        "path": f"mlsuperb/{dataset}/{iso}/wav/{utt_id}.wav",
                    }
                )

    ls = config["librispeech"]
    if ls:
        iso = ls["language"]
        spec, speaker_id, chapter_id, identities = langs[iso], 100, 1000, set()
        # train sets first so that speaker ids read like LibriSpeech's: train speakers, then eval
        for set_name in sorted(ls["sets"], key=LIBRISPEECH_SETS.index):
            s, rng, seen = ls["sets"][set_name], _rng(seed, "librispeech", set_name), set()
            variants = list(s["variants"])
            rng.shuffle(variants)
            for k in range(s["speakers"]):
                for _ in range(1000):  # a speaker is a (voice, variant, pitch) no other speaker has
                    ident = (rng.choice(spec.espeak), variants[k % len(variants)], rng.randint(*s["pitch"]))
                    if ident not in identities:
                        break
                else:
                    raise DataError(
                        f"librispeech.sets.{set_name}: cannot find a new (voice, variant, pitch) for "
                        f"speaker {k + 1}; add variants or widen the pitch range"
                    )
                identities.add(ident)
                voice, variant, pitch = ident
                for _ in range(s["chapters"]):
                    for j in range(s["utterances"]):
                        utt_id = f"{speaker_id}-{chapter_id}-{j:04d}"
                        rows.append(
                            {
                                "utt_id": utt_id,
                                "corpus": "librispeech",
                                "splits": (set_name,),
                                "dataset": set_name,
                                "lang": iso,
                                "speaker": str(speaker_id),
                                "chapter": str(chapter_id),
                                "voice": voice,
                                "variant": variant,
                                "rate": rng.randint(*s["rate"]),
                                "pitch": min(99, max(0, pitch + rng.randint(-4, 4))),
                                "text": _unique_sentence(rng, vocab[iso], lo_words, hi_words, seen).upper(),
                                "path": f"LibriSpeech/{set_name}/{speaker_id}/{chapter_id}/{utt_id}.flac",
                            }
                        )
                    chapter_id += 1
                speaker_id += 1
    return [Utterance(index=i, **row) for i, row in enumerate(rows)]


def _unique_sentence(rng: random.Random, words: Sequence[str], lo: int, hi: int, seen: set[str]) -> str:
    for _ in range(1000):
        text = random_sentence(rng, words, lo, hi)
        if text not in seen:
            seen.add(text)
            return text
    raise DataError(f"cannot draw a new distinct sentence after 1000 tries ({len(words)} words); raise text.top_n")


def _config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def make_plan(config: dict, out_dir: str | os.PathLike) -> list[Utterance]:
    """Write the plan of ``config`` to ``out_dir/.plan`` (a no-op if the same plan is there).

    Writes ``utts.jsonl`` (one :class:`Utterance` per line), ``config.yaml`` (the resolved
    config) and, last, ``plan.json`` (digest and counts; its presence marks a complete plan).

    Raises:
        DataError: ``out_dir`` holds a plan from a different config or seed.
    """
    plan_dir = Path(out_dir) / PLAN_DIR
    digest = _config_digest(config)
    meta_path = plan_dir / "plan.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("config_sha256") == digest:
            logger.info(
                "%s: plan from the same config and seed exists (%d utterances); nothing to do",
                plan_dir,
                meta["utterances"],
            )
            return read_plan(out_dir)
        raise DataError(
            f"{out_dir}: holds a corpus planned from a different config or seed "
            f"(seed {meta.get('seed')}, see {plan_dir / 'config.yaml'}); remove {out_dir} or use another --out_dir"
        )
    utts = build_plan(config)
    with atomic_open(plan_dir / "utts.jsonl") as f:
        for u in utts:
            f.write(u.to_json() + "\n")
    atomic_write_text(plan_dir / "config.yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    atomic_write_text(
        meta_path,
        json.dumps({"config_sha256": digest, "seed": config["seed"], "utterances": len(utts)}, indent=2) + "\n",
    )
    logger.info("%s: planned %d utterances", plan_dir, len(utts))
    return utts


def read_plan(out_dir: str | os.PathLike) -> list[Utterance]:
    """Read the utterances planned in ``out_dir/.plan``; fails if the plan is missing or incomplete."""
    plan_dir = Path(out_dir) / PLAN_DIR
    if not (plan_dir / "plan.json").is_file():
        raise DataError(f"{plan_dir}: no complete plan; run 'python -m espnet2_ext.bin.make_demo_corpus plan' first")
    utts = []
    with open(plan_dir / "utts.jsonl", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                utts.append(Utterance.from_json(line))
            except (ValueError, TypeError) as e:
                raise DataError(
                    f"{plan_dir / 'utts.jsonl'}:{lineno}: bad plan line ({e}); remove {out_dir} and re-plan"
                ) from None
            if utts[-1].index != lineno - 1:
                raise DataError(f"{plan_dir / 'utts.jsonl'}:{lineno}: index {utts[-1].index} out of order")
    return utts


def read_plan_config(out_dir: str | os.PathLike) -> dict:
    """The resolved config stored with the plan."""
    with open(Path(out_dir) / PLAN_DIR / "config.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


# --------------------------------------------------------------------------------------------
# synthesis


def shard_indices(n: int, shard: int, nshard: int) -> range:
    """Plan indices of shard ``shard`` (1-based, Kaldi style) of ``nshard``: ``i % nshard == shard - 1``."""
    if nshard < 1 or not 1 <= shard <= nshard:
        raise ValueError(f"shard must be in 1..nshard, got shard={shard} nshard={nshard}")
    return range(shard - 1, n, nshard)


def synthesize(utt: Utterance, tmp_dir: str | os.PathLike) -> np.ndarray:
    """Speak one utterance with espeak-ng and resample it with sox.

    Args:
        utt: the planned utterance.
        tmp_dir: scratch directory for espeak-ng's 22.05 kHz output.

    Returns:
        int16 samples at :data:`SAMPLE_RATE` Hz, shape ``(num_samples,)``.

    Raises:
        RuntimeError: espeak-ng or sox failed (message names the utterance, command and stderr).
    """
    text = utt.text.lower()  # all-caps words may be spelled out as abbreviations
    if not text or text.startswith("-"):
        raise DataError(f"{utt.utt_id}: text {utt.text!r} cannot be passed to espeak-ng")
    raw = Path(tmp_dir) / f"{utt.utt_id}.espeak.wav"
    _run(
        [
            "espeak-ng",
            "-v",
            f"{utt.voice}+{utt.variant}",
            "-s",
            str(utt.rate),
            "-p",
            str(utt.pitch),
            "-w",
            str(raw),
            text,
        ],
        what=f"utterance {utt.utt_id}: espeak-ng",
    )
    try:
        # -D: no dither, so the output is a pure function of the input
        pcm = _run(
            [
                "sox",
                "-D",
                str(raw),
                "-t",
                "raw",
                "-r",
                str(SAMPLE_RATE),
                "-e",
                "signed-integer",
                "-b",
                "16",
                "-c",
                "1",
                "-L",
                "-",
            ],
            what=f"utterance {utt.utt_id}: sox",
            binary=True,
        )
    finally:
        raw.unlink(missing_ok=True)
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def check_audio(utt: Utterance, samples: np.ndarray, max_seconds: float) -> None:
    """Reject silent, too short or too long audio (``max_seconds`` in seconds)."""
    seconds = len(samples) / SAMPLE_RATE
    peak = int(np.abs(samples.astype(np.int32)).max()) if len(samples) else 0
    if seconds < 0.3 or seconds > max_seconds:
        raise RuntimeError(f"utterance {utt.utt_id}: implausible duration {seconds:.2f} s for {utt.text!r}")
    if peak < 1000:
        raise RuntimeError(f"utterance {utt.utt_id}: audio is (nearly) silent (peak {peak}) for {utt.text!r}")


def write_audio(path: str | os.PathLike, samples: np.ndarray) -> None:
    """Write int16 ``samples`` at 16 kHz atomically as 16-bit PCM WAV or FLAC (from the suffix)."""
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC"}[path.suffix]
    with atomic_open(path, "wb") as f:
        sf.write(f, samples, SAMPLE_RATE, subtype="PCM_16", format=fmt)


def synth_shard(out_dir: str | os.PathLike, shard: int, nshard: int) -> dict[str, float]:
    """Synthesise the planned utterances of one shard whose audio file does not exist yet.

    Returns:
        ``{"planned": n, "skipped": n, "synthesized": n, "seconds": audio seconds written}``.
    """
    out_dir = Path(out_dir)
    utts = read_plan(out_dir)
    max_seconds = float(read_plan_config(out_dir)["max_seconds"])
    mine = [utts[i] for i in shard_indices(len(utts), shard, nshard)]
    todo = [u for u in mine if not (out_dir / u.path).is_file()]
    logger.info(
        "shard %d/%d: %d planned, %d already done, %d to synthesise",
        shard,
        nshard,
        len(mine),
        len(mine) - len(todo),
        len(todo),
    )
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="espeak_") as tmp:
        for utt in tqdm(todo, desc=f"synth {shard}/{nshard}", unit="utt", mininterval=2.0):
            samples = synthesize(utt, tmp)
            check_audio(utt, samples, max_seconds)
            write_audio(out_dir / utt.path, samples)
            seconds += len(samples) / SAMPLE_RATE
    logger.info("shard %d/%d: wrote %d files, %.2f h of audio", shard, nshard, len(todo), seconds / 3600)
    return {"planned": len(mine), "skipped": len(mine) - len(todo), "synthesized": len(todo), "seconds": seconds}


# --------------------------------------------------------------------------------------------
# layout


def _durations(out_dir: Path, utts: Sequence[Utterance]) -> dict[str, float]:
    """Seconds of audio per utterance id, checking each file is 16 kHz mono 16-bit PCM."""
    missing = [u for u in utts if not (out_dir / u.path).is_file()]
    if missing:
        shown = "\n  ".join(f"{u.utt_id}: {out_dir / u.path}" for u in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DataError(
            f"{out_dir}: {len(missing)} of {len(utts)} planned audio files are missing:\n  {shown}{more}\n"
            f"rerun 'python -m espnet2_ext.bin.make_demo_corpus synth --out_dir {out_dir} "
            f"--shard J --nshard N' for every shard, then finalize again"
        )
    out = {}
    for u in tqdm(utts, desc="check audio", unit="utt", mininterval=2.0):
        info = sf.info(str(out_dir / u.path))
        if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.subtype != "PCM_16":
            raise DataError(
                f"{out_dir / u.path}: expected {SAMPLE_RATE} Hz mono PCM_16, got {info.samplerate} Hz, "
                f"{info.channels} channels, {info.subtype}; delete it and rerun synth"
            )
        out[u.utt_id] = info.frames / info.samplerate
    return out


def write_layout(out_dir: str | os.PathLike, utts: Sequence[Utterance]) -> None:
    """Write the ML-SUPERB transcript files and the LibriSpeech ``trans.txt`` files atomically."""
    out_dir = Path(out_dir)
    groups: dict[tuple[str, str], list[Utterance]] = defaultdict(list)
    chapters: dict[tuple[str, str, str], list[Utterance]] = defaultdict(list)
    for u in utts:
        if u.corpus == "mlsuperb":
            groups[u.dataset, u.lang].append(u)
        else:
            chapters[u.dataset, u.speaker, u.chapter].append(u)
    for (dataset, lang), members in groups.items():
        for split in MLSUPERB_SPLITS:
            rows = [(u.utt_id, f"{u.voice}+{u.variant} {u.text}") for u in members if split in u.splits]
            write_kaldi_text(out_dir / "mlsuperb" / dataset / lang / f"transcript_{split}.txt", rows)
    for (set_name, spk, chapter), members in chapters.items():
        write_kaldi_text(
            out_dir / "LibriSpeech" / set_name / spk / chapter / f"{spk}-{chapter}.trans.txt",
            [(u.utt_id, u.text) for u in members],
        )


def corpus_stats(utts: Sequence[Utterance], seconds: dict[str, float]) -> dict:
    """Hours and utterance counts per ML-SUPERB split/language and LibriSpeech set."""

    def acc() -> dict:
        return {"utterances": 0, "hours": 0.0}

    ml_splits: dict[str, dict] = defaultdict(lambda: {**acc(), "languages": defaultdict(acc)})
    ls_sets: dict[str, dict] = defaultdict(lambda: {**acc(), "speakers": set()})
    datasets: dict[str, set[str]] = defaultdict(set)
    for u in utts:
        h = seconds[u.utt_id] / 3600
        if u.corpus == "mlsuperb":
            datasets[u.dataset].add(u.lang)
            for split in u.splits:
                for d in (ml_splits[split], ml_splits[split]["languages"][u.lang]):
                    d["utterances"] += 1
                    d["hours"] += h
        else:
            d = ls_sets[u.dataset]
            d["utterances"] += 1
            d["hours"] += h
            d["speakers"].add(u.speaker)

    def rounded(d: dict) -> dict:
        return {
            k: (
                round(v, 4)
                if isinstance(v, float)
                else rounded(v)
                if isinstance(v, dict)
                else sorted(v, key=int)
                if isinstance(v, set)
                else v
            )
            for k, v in d.items()
        }

    return {
        "sample_rate": SAMPLE_RATE,
        "total": {"utterances": len(utts), "hours": round(sum(seconds.values()) / 3600, 4)},
        "mlsuperb": {
            "datasets": {k: sorted(v) for k, v in datasets.items()},
            "splits": {s: rounded(ml_splits[s]) for s in MLSUPERB_SPLITS if s in ml_splits},
        },
        "librispeech": {s: rounded(ls_sets[s]) for s in LIBRISPEECH_SETS if s in ls_sets},
    }


def finalize(out_dir: str | os.PathLike) -> dict:
    """Check all planned audio, write transcripts and ``corpus_stats.json``, then ``.done``.

    ``.done`` is removed first, so it exists only while the corpus is known complete. Temporary
    files of killed synth jobs are removed, so an interrupted and resumed build ends up with
    exactly the files of an uninterrupted one.

    Returns:
        The corpus statistics (also written to ``out_dir/corpus_stats.json``).

    Raises:
        DataError: naming the missing or malformed audio files.
    """
    out_dir = Path(out_dir)
    (out_dir / DONE_FILE).unlink(missing_ok=True)
    utts = read_plan(out_dir)
    remove_stale_temp_files(out_dir)  # a synth job killed mid-write leaves its temporary file
    seconds = _durations(out_dir, utts)
    write_layout(out_dir, utts)
    stats = corpus_stats(utts, seconds)
    atomic_write_text(out_dir / STATS_FILE, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / DONE_FILE, json.dumps(stats["total"]) + "\n")
    _log_summary(stats)
    return stats


def _log_summary(stats: dict) -> None:
    logger.info("corpus: %d utterances, %.2f h", stats["total"]["utterances"], stats["total"]["hours"])
    for name, langs in stats["mlsuperb"]["datasets"].items():
        logger.info("ML-SUPERB dataset %s: %s", name, " ".join(langs))
    for split, d in stats["mlsuperb"]["splits"].items():
        per_lang = Counter({k: v["utterances"] for k, v in d["languages"].items()})
        logger.info(
            "ML-SUPERB %-11s %6d utts %6.2f h  %s",
            split,
            d["utterances"],
            d["hours"],
            " ".join(f"{k}:{v}" for k, v in sorted(per_lang.items())),
        )
    for name, d in stats["librispeech"].items():
        logger.info(
            "LibriSpeech %-15s %6d utts %6.2f h  %d speakers", name, d["utterances"], d["hours"], len(d["speakers"])
        )
