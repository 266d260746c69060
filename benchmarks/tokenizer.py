"""Tokenizer benchmark: our faiss k-means and assignment against ESPnet's settings and the machine's GEMM rate.

Measures, on the same synthetic SSL-like features in one run (figures are printed and written to
``benchmarks/results/tokenizer.{json,md}``):

1. **k-means fit**: :func:`espnet2_ext.tokenizer.kmeans.fit_kmeans` (greedy k-means++ seeding,
   :func:`~espnet2_ext.tokenizer.kmeans.greedy_kmeans_plusplus`, on 64 frames per centroid, then 20
   faiss Lloyd iterations on at most 256 frames per centroid; mean time and distortion of
   ``--seeds`` seeds, as the distortion varies from seed to seed) against sklearn
   ``MiniBatchKMeans`` with ESPnet's ``learn_kmeans.py`` settings (k-means++, max_iter 100, batch
   10000, tol 0, max_no_improvement 100, n_init 20, reassignment_ratio 0, compute_labels False);
   time and mean squared distance to the nearest centroid over all frames, both computed the same way.
2. **assignment**: :func:`~espnet2_ext.tokenizer.kmeans.assign` (nearest centroid of every frame)
   against the numpy reference argmin ``||x||^2 - 2 x C^T + ||C||^2`` and one plain float32 matmul
   ``x C^T`` of the same shape (the machine's GEMM rate); GFLOP/s = 2 N D K / seconds, best of 3.
3. **SSL passes per utterance**: forward calls of the upstream while the project's dump code
   learns features (a ``portion`` of train) and dumps units (every utterance), counted with a
   forward hook on a tiny wav2vec2.
4. **bytes on disk per hour of audio**: the Kaldi-style unit file (``utt u1 u2 ...``) of the
   assigned frames cut into 5 s utterances, against float32 / float16 features (50 frames/s).

Synthetic features: ``--frames`` frames of ``--dim`` dims drawn around 4x``--k`` "phone" centres
that live in a 64-dim subspace (Zipf-distributed frequencies) plus isotropic noise, so the
clusters are neither trivial nor structureless, as SSL features.

Usage::

    python benchmarks/tokenizer.py              # 100k x 768, K=500 (a few minutes on 2 idle cores)
    python benchmarks/tokenizer.py --quick      # 20k x 768, K=100 (under a minute)
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/tokenizer.py --quick   # on a loaded machine

On a machine shared with other jobs, run single-threaded: OpenMP threads (faiss, sklearn's k-means)
busy-wait at barriers and, oversubscribed, slow down by large and unequal factors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans, mean_squared_distance  # noqa: E402
from espnet2_ext.utils.fileio import atomic_write_text  # noqa: E402

logger = logging.getLogger("benchmark")

ESPNET_KMEANS = {"init": "k-means++", "max_iter": 100, "batch_size": 10000, "tol": 0.0, "max_no_improvement": 100,
                 "n_init": 20, "reassignment_ratio": 0.0, "compute_labels": False, "init_size": None}
FRAME_RATE_HZ = 50.0


def synthetic_features(frames: int, dim: int, k: int, seed: int = 0) -> np.ndarray:
    """(frames, dim) float32: Zipf-weighted centres in a 64-dim subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4 * k, 64)).astype(np.float32) @ rng.standard_normal((64, dim)).astype(np.float32)
    centres /= np.sqrt(64)
    freq = 1.0 / np.arange(1, 4 * k + 1)
    z = rng.choice(4 * k, size=frames, p=freq / freq.sum())
    return (centres[z] + 0.5 * rng.standard_normal((frames, dim)).astype(np.float32)).astype(np.float32)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_assign(x: np.ndarray, c: np.ndarray, chunk: int = 20000) -> np.ndarray:
    """The reference: argmin ||x||^2 - 2 x C^T + ||C||^2 (ESPnet's / fairseq's labeller), chunked."""
    c_sq = (c * c).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk]
        out[s : s + chunk] = ((xs * xs).sum(1, keepdims=True) - 2 * xs @ c.T + c_sq).argmin(1)
    return out


def bench_kmeans(x: np.ndarray, k: int, skip_sklearn: bool, seeds: int) -> dict:
    """Our fit with ``seeds`` seeds (the distortion varies more between seeds than between settings) vs one sklearn fit."""
    runs = []
    for seed in range(seeds):
        start = time.perf_counter()
        centroids = fit_kmeans(x, k, niter=20, seed=seed, max_points_per_centroid=256, init_points_per_centroid=64)
        runs.append({"seed": seed, "seconds": time.perf_counter() - start,
                     "mean_squared_distance": mean_squared_distance(x, centroids)})
        logger.info("faiss k-means, seed %d: %.1f s, mean squared distance %.4f", seed, runs[-1]["seconds"],
                    runs[-1]["mean_squared_distance"])
        if seed == 0:
            ours = centroids  # the assignment benchmark's centroids
    msd = [r["mean_squared_distance"] for r in runs]
    result = {"faiss": {"seconds": float(np.mean([r["seconds"] for r in runs])), "mean_squared_distance": float(np.mean(msd)),
                        "mean_squared_distance_range": [min(msd), max(msd)], "runs": runs,
                        "settings": "niter 20, max_points_per_centroid 256, greedy k-means++ seeding on "
                                    "init_points_per_centroid 64"}}
    if not skip_sklearn:
        from sklearn.cluster import MiniBatchKMeans

        start = time.perf_counter()
        km = MiniBatchKMeans(n_clusters=k, random_state=0, **ESPNET_KMEANS).fit(x)
        sk_s = time.perf_counter() - start
        msd = mean_squared_distance(x, km.cluster_centers_)
        result["espnet_sklearn"] = {"seconds": sk_s, "mean_squared_distance": msd, "settings": ESPNET_KMEANS}
        result["speedup"] = sk_s / result["faiss"]["seconds"]
        result["distortion_ratio"] = result["faiss"]["mean_squared_distance"] / msd
        logger.info("sklearn MiniBatchKMeans (ESPnet settings): %.1f s, mean squared distance %.4f -> %.1fx faster, "
                    "distortion ratio %.4f", sk_s, msd, result["speedup"], result["distortion_ratio"])
    return {"centroids": ours, **result}


def bench_assign(x: np.ndarray, c: np.ndarray) -> dict:
    flops = 2.0 * x.shape[0] * x.shape[1] * c.shape[0]
    labels = assign(x, c)
    reference = numpy_assign(x, c)
    t_ours = best_of(lambda: assign(x, c))
    t_ref = best_of(lambda: numpy_assign(x, c))
    t_mm = best_of(lambda: x @ c.T)
    out = {
        "frames": len(x), "agree_with_reference": float((labels == reference).mean()),
        "assign_seconds": t_ours, "numpy_reference_seconds": t_ref, "matmul_seconds": t_mm,
        "assign_gflops": flops / t_ours / 1e9, "numpy_reference_gflops": flops / t_ref / 1e9,
        "matmul_gflops": flops / t_mm / 1e9, "assign_vs_matmul": t_mm / t_ours, "assign_vs_reference": t_ref / t_ours,
        "assign_frames_per_second": len(x) / t_ours,
    }
    logger.info("assignment: %.3f s (%.0f GFLOP/s), numpy reference %.3f s, plain matmul %.3f s (%.0f GFLOP/s): "
                "%.0f%% of the matmul rate", t_ours, out["assign_gflops"], t_ref, t_mm, out["matmul_gflops"],
                100 * out["assign_vs_matmul"])
    return {"labels": labels, **out}


def bench_ssl_passes(tmp: Path) -> dict:
    """Upstream forward calls per utterance while dumping k-means features and units."""
    import soundfile as sf

    from espnet2_ext.ssl.checkpoints import write_tiny_checkpoint
    from espnet2_ext.tokenizer.dump import dump_features, dump_units, learning_subset, open_features
    from espnet2_ext.tokenizer.features import FeatureExtractor, FeatureSpec
    from espnet2_ext.tokenizer.unit_model import UnitModel

    rng = np.random.default_rng(0)
    data = tmp / "train"
    data.mkdir(parents=True)
    ids = [f"utt{i:02d}" for i in range(12)]
    lengths = rng.integers(8000, 32000, len(ids))
    for utt, n in zip(ids, lengths):
        sf.write(data / f"{utt}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
    (data / "wav.scp").write_text("".join(f"{u} {data / u}.wav\n" for u in ids))
    (data / "utt2num_samples").write_text("".join(f"{u} {n}\n" for u, n in zip(ids, lengths)))
    model_dir = write_tiny_checkpoint("hf_wav2vec2_custom", tmp / "ssl")
    info = {"upstream": {"name": "hf_wav2vec2_custom", "path": str(model_dir), "cache_dir": None},
            "num_hidden_states": 3}
    extractor = FeatureExtractor(FeatureSpec.parse("uniform", info))
    calls = []
    extractor.upstream.upstream.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    portion, nshard = 0.5, 2
    for j in range(1, nshard + 1):
        dump_features([(extractor, tmp / "feats")], data, portion, 0, j, nshard)
    learn_calls, learn_utts = sum(calls), len(learning_subset(ids, portion, 0))
    feats = np.concatenate(open_features(tmp / "feats"))
    model = UnitModel(fit_kmeans(feats, 8), extractor.spec)
    calls.clear()
    for j in range(1, nshard + 1):
        dump_units([(model, extractor, tmp / "units")], data, j, nshard)
    return {"utterances": len(ids), "learning_subset": learn_utts, "portion": portion,
            "passes_per_utterance_learning": learn_calls / learn_utts, "passes_per_utterance_units": sum(calls) / len(ids)}


def bench_disk(labels: np.ndarray, dim: int) -> dict:
    """Bytes per hour of the Kaldi unit file (5 s utterances) vs float features."""
    per_utt = int(5 * FRAME_RATE_HZ)
    text = "".join(f"utt{i:08d} {' '.join(map(str, labels[s : s + per_utt].tolist()))}\n"
                   for i, s in enumerate(range(0, len(labels), per_utt)))
    hours = len(labels) / FRAME_RATE_HZ / 3600
    frames_per_hour = FRAME_RATE_HZ * 3600
    return {"units_text_bytes_per_hour": len(text.encode()) / hours, "float32_bytes_per_hour": frames_per_hour * dim * 4,
            "float16_bytes_per_hour": frames_per_hour * dim * 2}


def write_results(result: dict, out: Path) -> None:
    k, a, s, d = result["kmeans"], result["assign"], result["ssl_passes"], result["disk"]
    size = result["size"]
    lines = [
        "# Tokenizer benchmark", "",
        f"`python benchmarks/tokenizer.py{' --quick' if size['quick'] else ''}` on {result['machine']} "
        f"(thread settings {json.dumps({k: v for k, v in result['threads'].items() if v})}); "
        f"load average at the start {result['load_average_start']}, at the end {result['load_average_end']} "
        "(a shared machine: absolute times vary, the ratios are measured in the same run).", "",
        f"Features: {size['frames']:,} synthetic frames x {size['dim']} dims (SSL-like clusters), K={size['k']}.", "",
        "| measurement | ours | reference | ratio |", "|---|---|---|---|",
    ]
    if "espnet_sklearn" in k:
        seeds = len(k["faiss"]["runs"])
        lo, hi = k["faiss"]["mean_squared_distance_range"]
        lines.append(f"| k-means fit time | {k['faiss']['seconds']:.1f} s (faiss, mean of {seeds} seeds) | {k['espnet_sklearn']['seconds']:.1f} s "
                     f"(sklearn MiniBatchKMeans, ESPnet settings) | {k['speedup']:.1f}x faster (target >= 20x) |")
        lines.append(f"| mean squared distance (all frames) | {k['faiss']['mean_squared_distance']:.4f} (mean of {seeds} "
                     f"seeds; {lo:.4f}-{hi:.4f}) | "
                     f"{k['espnet_sklearn']['mean_squared_distance']:.4f} | {k['distortion_ratio']:.4f} (target <= 1) |")
    lines += [
        f"| assignment | {a['assign_seconds']:.3f} s, {a['assign_gflops']:.0f} GFLOP/s | plain matmul "
        f"{a['matmul_seconds']:.3f} s, {a['matmul_gflops']:.0f} GFLOP/s | {100 * a['assign_vs_matmul']:.0f}% of the "
        "matmul rate (target >= 70%) |",
        f"| assignment vs numpy reference | {a['assign_seconds']:.3f} s | {a['numpy_reference_seconds']:.3f} s | "
        f"{a['assign_vs_reference']:.2f}x (labels agree on {100 * a['agree_with_reference']:.3f}% of frames) |",
        f"| SSL passes per utterance | learning {s['passes_per_utterance_learning']:g}, units "
        f"{s['passes_per_utterance_units']:g} | - | {s['utterances']} utterances, k-means subset {s['learning_subset']} |",
        f"| bytes on disk per hour of audio | units text {d['units_text_bytes_per_hour'] / 1e6:.2f} MB | float32 "
        f"features {d['float32_bytes_per_hour'] / 1e6:.0f} MB (float16 {d['float16_bytes_per_hour'] / 1e6:.0f} MB) | "
        f"{d['float32_bytes_per_hour'] / d['units_text_bytes_per_hour']:.0f}x smaller |",
        "",
        "Settings: " + json.dumps({"faiss": k["faiss"]["settings"], "espnet_sklearn": ESPNET_KMEANS}),
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k frames, K=100")
    parser.add_argument("--frames", type=int, default=None, help="default 100000 (20000 with --quick)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=None, help="default 500 (100 with --quick)")
    parser.add_argument("--skip_sklearn", action="store_true", help="leave out ESPnet's k-means (slow)")
    parser.add_argument("--seeds", type=int, default=3, help="our k-means runs (seeds 0..N-1); sklearn runs once")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/tokenizer.json")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    frames = args.frames or (20000 if args.quick else 100000)
    k = args.k or (100 if args.quick else 500)
    result = {"size": {"frames": frames, "dim": args.dim, "k": k, "quick": args.quick},
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")},
              "load_average_start": [round(v, 2) for v in os.getloadavg()]}
    x = synthetic_features(frames, args.dim, k)
    kmeans = bench_kmeans(x, k, args.skip_sklearn, args.seeds)
    centroids = kmeans.pop("centroids")
    result["kmeans"] = kmeans
    assign_result = bench_assign(x, centroids)
    labels = assign_result.pop("labels")
    result["assign"] = assign_result
    with tempfile.TemporaryDirectory() as tmp:
        result["ssl_passes"] = bench_ssl_passes(Path(tmp))
    logger.info("SSL passes per utterance: %s", result["ssl_passes"])
    result["disk"] = bench_disk(labels, args.dim)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_results(result, args.out)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
