"""The demo corpus: real ML-SUPERB/LibriSpeech layouts, audio format, determinism, resumability.

The tiny corpus (conf/corpus/tiny.yaml) is built once per module: plan, shard 1 of 2, shard 2
of 2, finalize; the tests then read what a recipe would read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet2_ext.data import demo_corpus as dc
from espnet2_ext.utils.fileio import DataError, read_kaldi_text

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "conf" / "corpus" / "tiny.yaml"
DEMO = REPO / "conf" / "corpus" / "demo.yaml"
EVAL_SETS = ("dev-clean", "dev-other", "test-clean", "test-other")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The tiny corpus, with the audio files present after the first of two synth shards."""
    out = tmp_path_factory.mktemp("tiny") / "corpus"
    utts = dc.make_plan(dc.load_config(TINY), out)
    dc.synth_shard(out, 1, 2)
    after_shard1 = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".wav", ".flac")}
    dc.synth_shard(out, 2, 2)
    stats = dc.finalize(out)
    return {"dir": out, "utts": utts, "after_shard1": after_shard1, "stats": stats}


def _raw_tiny() -> dict:
    return yaml.safe_load(TINY.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# layout


def test_mlsuperb_layout(corpus):
    root = corpus["dir"] / "mlsuperb"
    lang_dirs = sorted(p for p in root.glob("*/*") if p.is_dir())
    assert len(lang_dirs) == 6  # espeak-male x 4 + espeak-female x 2 in tiny.yaml
    for lang_dir in lang_dirs:
        iso = lang_dir.name
        splits = {s: read_kaldi_text(lang_dir / f"transcript_{s}.txt") for s in dc.MLSUPERB_SPLITS}
        for split, rows in splits.items():
            assert rows, f"{lang_dir}: empty {split}"
            for utt_id, rest in rows.items():
                assert utt_id.split("_")[-2] == iso
                assert utt_id.startswith(f"{lang_dir.parent.name}_{iso}_")
                field2, text = rest.split(maxsplit=1)  # '<utt_id> <field2> <text>'
                assert field2 and text.strip()
                assert (lang_dir / "wav" / f"{utt_id}.wav").is_file()
        assert set(splits["10min_train"]) < set(splits["1h_train"])
        train, dev, test = set(splits["1h_train"]), set(splits["10min_dev"]), set(splits["10min_test"])
        assert not (train & dev or train & test or dev & test)
        # every wav file is in some transcript, and nothing else is in wav/
        assert {p.stem for p in (lang_dir / "wav").iterdir()} == train | dev | test


def test_librispeech_layout(corpus):
    root = corpus["dir"] / "LibriSpeech"
    assert sorted(p.name for p in root.iterdir()) == sorted(("train-clean-100", *EVAL_SETS))
    speakers: dict[str, set[str]] = {}
    for set_dir in root.iterdir():
        speakers[set_dir.name] = {p.name for p in set_dir.iterdir()}
        for chapter_dir in set_dir.glob("*/*"):
            spk, chapter = chapter_dir.parent.name, chapter_dir.name
            assert spk.isdigit() and chapter.isdigit()
            trans = read_kaldi_text(chapter_dir / f"{spk}-{chapter}.trans.txt")
            flacs = {p.stem for p in chapter_dir.glob("*.flac")}
            assert set(trans) == flacs and flacs
            for utt_id, text in trans.items():
                s, c, n = utt_id.split("-")
                assert (s, c) == (spk, chapter) and len(n) == 4 and n.isdigit()
                assert text == text.upper() and text.replace(" ", "").isalpha()
    train = speakers["train-clean-100"]
    for name in EVAL_SETS:
        assert speakers[name] and not speakers[name] & train, name


def test_other_sets_use_unseen_voices(corpus):
    utts = corpus["utts"]
    train_variants = {u.variant for u in utts if u.dataset == "train-clean-100"}
    for name in ("dev-other", "test-other"):
        assert not {u.variant for u in utts if u.dataset == name} & train_variants


def test_stats_and_done(corpus):
    out = corpus["dir"]
    stats = json.loads((out / dc.STATS_FILE).read_text(encoding="utf-8"))
    assert (out / dc.DONE_FILE).is_file()
    assert stats["total"]["utterances"] == len(corpus["utts"])
    assert stats["mlsuperb"]["splits"]["1h_train"]["languages"]["eng"]["utterances"] == 12
    assert set(stats["librispeech"]) == {"train-clean-100", *EVAL_SETS}
    assert 0 < stats["total"]["hours"] < 0.2


# ---------------------------------------------------------------------------------------------
# audio


def test_audio_format(corpus):
    out = corpus["dir"]
    for u in corpus["utts"]:
        path = out / u.path
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        assert info.format == ("WAV" if u.corpus == "mlsuperb" else "FLAC")
        x, _ = sf.read(str(path), dtype="int16")
        assert np.abs(x.astype(np.int32)).max() > 1000, f"{path} is silent"
        n_words, n_chars = len(u.text.split()), len(u.text.replace(" ", ""))
        seconds = len(x) / 16000
        # espeak-ng speaks ~0.3-0.7 s per word; spelling out letter names would take far longer per char
        assert 0.15 < seconds / n_words < 1.2, (u.utt_id, seconds, u.text)
        assert seconds / n_chars < 0.25, (u.utt_id, seconds, u.text)


def test_text_is_in_the_language_script(corpus):
    scripts = {"eng": "Latin", "deu": "Latin", "rus": "Cyrillic", "hin": "Devanagari"}
    for u in corpus["utts"]:
        lo, hi = 4, 8
        words = u.text.split()
        assert lo <= len(words) <= hi
        assert all(dc.word_in_script(w, scripts[u.lang]) for w in words), u.text


def test_word_filter():
    assert dc.word_in_script("привет", "Cyrillic")
    assert not dc.word_in_script("hello", "Cyrillic")
    assert not dc.word_in_script("приvет", "Cyrillic")
    assert not dc.word_in_script("2020", "Latin")
    assert not dc.word_in_script("don't", "Latin")
    assert dc.word_in_script("straße", "Latin", dc.KNOWN_LANGUAGES["deu"].alphabet)
    assert not dc.word_in_script("łódź", "Latin", dc.KNOWN_LANGUAGES["deu"].alphabet)
    assert dc.word_in_script("नमस्ते", "Devanagari")
    assert not dc.word_in_script("नमस्ते।", "Devanagari")  # danda is punctuation
    assert not dc.word_in_script("می\u200cشود", "Arabic")  # zero-width non-joiner


# ---------------------------------------------------------------------------------------------
# determinism, resumability, sharding


def test_plan_is_deterministic(corpus, tmp_path):
    again = dc.make_plan(dc.load_config(TINY), tmp_path / "a")
    assert again == corpus["utts"]
    plan_file = Path(dc.PLAN_DIR) / "utts.jsonl"
    assert (tmp_path / "a" / plan_file).read_bytes() == (corpus["dir"] / plan_file).read_bytes()
    other = dc.make_plan(dc.load_config(TINY, seed=1), tmp_path / "b")
    assert [u.utt_id for u in other] == [u.utt_id for u in again]  # same layout ...
    assert sum(a.text != b.text for a, b in zip(other, again)) > 0.9 * len(again)  # ... other content


def test_audio_is_deterministic(corpus, tmp_path):
    utts = corpus["utts"]
    sample = [next(u for u in utts if u.lang == lang) for lang in ("eng", "rus", "hin")]
    sample.append(next(u for u in utts if u.corpus == "librispeech"))
    for u in sample:
        samples = dc.synthesize(u, tmp_path)
        dc.write_audio(tmp_path / u.path, samples)
        assert (tmp_path / u.path).read_bytes() == (corpus["dir"] / u.path).read_bytes(), u.utt_id


def test_replan_same_is_noop_other_is_refused(corpus):
    out = corpus["dir"]
    plan_file = out / dc.PLAN_DIR / "utts.jsonl"
    mtime = plan_file.stat().st_mtime_ns
    assert dc.make_plan(dc.load_config(TINY), out) == corpus["utts"]
    assert plan_file.stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="different config or seed.*remove"):
        dc.make_plan(dc.load_config(TINY, seed=5), out)


def test_shards_cover_every_utterance_once(corpus):
    for n in (1, 7, 76):
        for nshard in (1, 2, 3, 5):
            seen = [i for j in range(1, nshard + 1) for i in dc.shard_indices(n, j, nshard)]
            assert sorted(seen) == list(range(n))
    with pytest.raises(ValueError):
        dc.shard_indices(10, 0, 2)
    # the first synth job wrote exactly the files of shard 1
    utts = corpus["utts"]
    assert corpus["after_shard1"] == {utts[i].path for i in dc.shard_indices(len(utts), 1, 2)}


def test_resume_after_lost_file(corpus):
    out = corpus["dir"]
    utts = corpus["utts"]
    victim = utts[5]
    before = (out / victim.path).read_bytes()
    (out / victim.path).unlink()
    with pytest.raises(DataError, match=victim.utt_id) as err:
        dc.finalize(out)
    assert "synth" in str(err.value)
    assert not (out / dc.DONE_FILE).exists()
    shard = victim.index % 2 + 1
    result = dc.synth_shard(out, shard, 2)
    assert result["synthesized"] == 1 and result["skipped"] == result["planned"] - 1
    dc.finalize(out)
    assert (out / dc.DONE_FILE).is_file()
    assert (out / victim.path).read_bytes() == before


def test_synthesis_failure_names_the_utterance(corpus, tmp_path):
    u = corpus["utts"][0]
    broken = dc.Utterance(**{**u.__dict__, "voice": "zzzz"})  # an espeak-ng error
    with pytest.raises(RuntimeError, match=f"{u.utt_id}.*espeak-ng.*zzzz.*does not exist"):
        dc.synthesize(broken, tmp_path)


# ---------------------------------------------------------------------------------------------
# config


def test_unknown_language_is_rejected():
    raw = _raw_tiny()
    raw["mlsuperb"]["languages"] = ["eng", "xyz"]
    with pytest.raises(DataError, match="unknown language code 'xyz'"):
        dc.resolve_config(raw, source="tiny.yaml")
    raw["mlsuperb"]["languages"] = ["eng", {"iso3": "xyz", "wordfreq": "zz", "espeak": "en", "script": "Latin"}]
    with pytest.raises(DataError, match="wordfreq has no language code 'zz'"):
        dc.resolve_config(raw, source="tiny.yaml")


def test_bad_config_values_are_rejected():
    raw = _raw_tiny()
    raw["mlsuperb"]["datasets"]["espeak-male"]["variants"] = ["m1", "nosuchvariant"]
    with pytest.raises(DataError, match="nosuchvariant"):
        dc.resolve_config(raw)
    raw = _raw_tiny()
    raw["librispeech"]["sets"]["dev-other"]["variants"] = ["m1"]  # heard in train-clean-100
    with pytest.raises(DataError, match="unseen in training"):
        dc.resolve_config(raw)
    raw = _raw_tiny()
    raw["mlsuperb"]["utterances"]["10min_trian"] = 3
    with pytest.raises(DataError, match="10min_trian: unknown key"):
        dc.resolve_config(raw)


def test_demo_config_languages_and_scripts():
    cfg = dc.load_config(DEMO)
    langs = cfg["mlsuperb"]["languages"]
    assert len(langs) >= 8
    assert len({cfg["languages"][iso]["script"] for iso in langs}) >= 4
    assert len(cfg["mlsuperb"]["datasets"]) >= 2
    assert {"train-clean-100", *EVAL_SETS} <= set(cfg["librispeech"]["sets"])
    recipe = yaml.safe_load((REPO / "conf" / "recipe" / "demo.yaml").read_text(encoding="utf-8"))
    assert set(recipe.get("reserved_langs") or []) <= set(langs)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli(corpus):
    cmd = [sys.executable, "-m", "espnet2_ext.bin.make_demo_corpus"]
    out = str(corpus["dir"])
    ok = subprocess.run([*cmd, "finalize", "--out_dir", out], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "corpus:" in ok.stderr
    bad = subprocess.run(
        [*cmd, "plan", "--config", str(TINY), "--out_dir", out, "--seed", "3"], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 1 and "remove" in bad.stderr
