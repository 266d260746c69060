"""k-means and unit files under bad input and faults: too few frames, same seed, a full disk while writing units."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from espnet2_ext.tokenizer.dump import merge_units
from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans
from espnet2_ext.utils import fileio
from espnet2_ext.utils.fileio import stale_temp_files, write_kaldi_text


def test_more_centroids_than_frames_names_the_fix() -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"k=10 centroids needs at least 10 frames, got N=5; lower k .*larger `portion`"):
        fit_kmeans(x, k=10)


def test_nan_features_are_rejected() -> None:
    x = np.ones((50, 4), dtype=np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_kmeans(x, k=4)


def test_same_seed_gives_the_same_units_another_seed_does_not() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 1.0, (300, 8)) for c in range(0, 60, 6)]).astype(np.float32)
    a, b = fit_kmeans(x, k=12, seed=3), fit_kmeans(x, k=12, seed=3)
    assert np.array_equal(a, b) and np.array_equal(assign(x, a), assign(x, b))
    assert not np.array_equal(fit_kmeans(x, k=12, seed=4), a)


def _units_dir(root: Path, utts: int) -> tuple[Path, Path]:
    """A set's data dir and its unit dump with two shards of ``utts`` utterances (~2 kB each)."""
    data, out = root / "data", root / "units"
    data.mkdir()
    ids = [f"utt{i:05d}" for i in range(utts)]
    write_kaldi_text(data / "wav.scp", [(u, f"/a/{u}.wav") for u in ids])
    units = " ".join(["123"] * 500)
    for j in (1, 2):
        write_kaldi_text(out / "split" / f"units.{j}", [(u, units) for u in ids[j - 1 :: 2]])
    return data, out


def test_full_disk_while_merging_units_leaves_no_units_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = _units_dir(tmp_path, 10)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device while writing .*units/units; nothing was written"):
        merge_units(out, 2, data)
    assert not (out / "units").exists() and not stale_temp_files(out)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (needs root), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs as root: {r.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root; the simulated test above covers this")
def test_really_full_disk_while_merging_units(small_tmpfs: Path) -> None:
    data, out = _units_dir(small_tmpfs, 40)  # ~80 kB of shards; the merged file needs as much again
    st = os.statvfs(small_tmpfs)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 40_000))
    with pytest.raises(OSError) as e:
        merge_units(out, 2, data)
    assert e.value.errno == errno.ENOSPC and f"{out / 'units'}" in str(e.value) and "Free space" in str(e.value)
    assert not (out / "units").exists() and not stale_temp_files(small_tmpfs)
    filler.unlink()  # space freed: the rerun completes
    assert merge_units(out, 2, data).read_text().count("\n") == 40


def test_seeding_looks_at_init_points_per_centroid_frames_and_still_finds_the_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from espnet2_ext.tokenizer import kmeans

    rng = np.random.default_rng(2)
    centres = rng.normal(0.0, 20.0, (10, 8))
    x = np.concatenate([rng.normal(c, 1.0, (500, 8)) for c in centres]).astype(np.float32)
    seen = []
    real = kmeans.greedy_kmeans_plusplus
    monkeypatch.setattr(kmeans, "greedy_kmeans_plusplus", lambda a, k, rng: (seen.append(len(a)), real(a, k, rng))[1])
    centroids = fit_kmeans(x, k=10, seed=0, max_points_per_centroid=300, init_points_per_centroid=20)
    assert seen == [10 * 20]
    # every true cluster got its own centroid: each centre's nearest centroid is within the noise
    nearest = np.sqrt(((centres[:, None, :] - centroids[None]) ** 2).sum(-1)).min(1)
    assert nearest.max() < 1.0 and len(set(assign(centres.astype(np.float32), centroids))) == 10
    seen.clear()
    fit_kmeans(x[:150], k=10, init_points_per_centroid=20)  # fewer frames than K x 20: seeding sees them all
    assert seen == [150]


@pytest.mark.parametrize("option", ["max_points_per_centroid", "init_points_per_centroid"])
def test_points_per_centroid_below_one_is_an_error(option: str) -> None:
    x = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=f"{option} \\(0\\) .*must be >= 1"):
        fit_kmeans(x, k=4, **{option: 0})


def test_greedy_seeding_takes_one_frame_of_each_separated_cluster_and_seeds_as_well_as_sklearns() -> None:
    from sklearn.cluster import kmeans_plusplus

    from espnet2_ext.tokenizer.kmeans import greedy_kmeans_plusplus, mean_squared_distance

    rng = np.random.default_rng(3)
    centres = rng.normal(0.0, 30.0, (8, 16))
    x = np.concatenate([rng.normal(c, 1.0, (200, 16)) for c in centres]).astype(np.float32)
    seeds = greedy_kmeans_plusplus(x, 8, np.random.default_rng(0))
    assert seeds.dtype == np.float32 and seeds.shape == (8, 16)
    assert all(any(np.array_equal(s, row) for row in x) for s in seeds), "seeds are frames"
    assert sorted(assign(seeds, centres.astype(np.float32))) == list(range(8)), "one seed per cluster"
    np.testing.assert_array_equal(seeds, greedy_kmeans_plusplus(x, 8, np.random.default_rng(0)))
    # overlapping clusters: over 5 seeds, the distortion of the seeds alone is sklearn's within 3 %
    y = np.concatenate([rng.normal(c, 12.0, (150, 16)) for c in rng.normal(0.0, 10.0, (40, 16))]).astype(np.float32)
    ours = np.mean([mean_squared_distance(y, greedy_kmeans_plusplus(y, 20, np.random.default_rng(s))) for s in range(5)])
    ref = np.mean([mean_squared_distance(y, kmeans_plusplus(y, 20, random_state=s)[0]) for s in range(5)])
    assert abs(ours / ref - 1) < 0.03, (ours, ref)
