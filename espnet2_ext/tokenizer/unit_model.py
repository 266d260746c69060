"""The saved unit model: k-means centroids + the feature spec they were learned on + metadata.

On disk (``exp/kmeans/<system>/``), readable without the project:

* ``centroids.npy`` -- (K, D) float32 centroids;
* ``unit_model.json`` -- ``{"k", "dim", "feature_spec" (FeatureSpec.to_dict), "kmeans" (settings
  and figures: frames, seconds, distortion)}``.

:meth:`UnitModel.export_sklearn` also writes ``km_<K>.mdl``: the joblib-pickled sklearn k-means
object ESPnet's asr2 recipes pack and load (their labeller reads ``cluster_centers_``; ``predict``
works too), so ESPnet users can reuse the units.

Example:
    >>> model = UnitModel.load("exp/kmeans/twostep")                  # doctest: +SKIP
    >>> extractor = FeatureExtractor(model.spec)                       # doctest: +SKIP
    >>> units = model.units(extractor, wavs, wav_lens)                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from espnet2_ext.tokenizer.features import FeatureExtractor, FeatureSpec
from espnet2_ext.tokenizer.kmeans import assign
from espnet2_ext.utils.fileio import DataError, atomic_open, atomic_write_text

CENTROIDS = "centroids.npy"
META = "unit_model.json"


@dataclasses.dataclass
class UnitModel:
    """Centroids and the features they cluster.

    Attributes:
        centroids: (K, D) float32.
        spec: the features (same spec for learning, dumping and the frontend).
        meta: k-means settings and figures (JSON-ready).
    """

    centroids: np.ndarray
    spec: FeatureSpec
    meta: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        if self.centroids.ndim != 2 or not len(self.centroids):
            raise ValueError(f"centroids must be a non-empty (K, D) array, got shape {self.centroids.shape}")

    @property
    def k(self) -> int:
        """Number of units K."""
        return len(self.centroids)

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.centroids.shape[1]

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``centroids.npy`` and ``unit_model.json`` (atomically) into ``out_dir``."""
        out_dir = Path(out_dir)
        with atomic_open(out_dir / CENTROIDS, "wb") as f:
            np.save(f, self.centroids)
        info = {"k": self.k, "dim": self.dim, "feature_spec": self.spec.to_dict(), "kmeans": dict(self.meta)}
        atomic_write_text(out_dir / META, json.dumps(info, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> UnitModel:
        """Read a unit model written by :meth:`save`.

        Raises:
            DataError: a file is missing or the two files disagree.
        """
        model_dir = Path(model_dir)
        for name in (CENTROIDS, META):
            if not (model_dir / name).is_file():
                raise DataError(f"{model_dir / name}: not found; learn the unit model first (run.sh stage 7)")
        try:
            info = json.loads((model_dir / META).read_text(encoding="utf-8"))
            spec = FeatureSpec.from_dict(info["feature_spec"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{model_dir / META}: not a unit model description ({e!r})") from None
        centroids = np.load(model_dir / CENTROIDS)
        if centroids.shape != (info.get("k"), info.get("dim")):
            raise DataError(f"{model_dir}: centroids have shape {centroids.shape} but {META} says "
                            f"({info.get('k')}, {info.get('dim')}); relearn the unit model")
        return cls(centroids, spec, info.get("kmeans", {}))

    def assign(self, feats: np.ndarray) -> np.ndarray:
        """(N,) int64 unit ids of (N, D) frames."""
        return assign(feats, self.centroids)

    def units(self, extractor: FeatureExtractor, wavs: torch.Tensor, wav_lens: torch.Tensor) -> list[np.ndarray]:
        """Unit ids of a padded batch of waveforms.

        Args:
            extractor: a :class:`FeatureExtractor` of :attr:`spec`.
            wavs: (B, T) float waveforms at 16 kHz.
            wav_lens: (B,) lengths in samples.

        Returns:
            B int64 arrays, (F_b,) unit ids per utterance.
        """
        if extractor.spec != self.spec:
            raise ValueError("the feature extractor's spec is not the unit model's")
        feats, lens = extractor(wavs, wav_lens)
        if feats.size(-1) != self.dim:
            raise ValueError(f"features have {feats.size(-1)} dims, the unit model {self.dim}")
        lens = lens.tolist()
        flat = torch.cat([f[:n] for f, n in zip(feats, lens)]).cpu().numpy()
        ids = self.assign(flat) if len(flat) else np.zeros(0, dtype=np.int64)
        return np.split(ids, np.cumsum(lens)[:-1])

    def export_sklearn(self, path: str | os.PathLike) -> Path:
        """Write the centroids as a fitted sklearn ``MiniBatchKMeans`` pickled with joblib (``km_<K>.mdl``).

        That is the object ESPnet's asr2 recipes pack; their labeller reads ``cluster_centers_`` and
        labels with argmin ``||x||^2 - 2 x C^T + ||C||^2``, the assignment :meth:`assign` computes.
        """
        import joblib
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=self.k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                             max_no_improvement=100, n_init=20, reassignment_ratio=0.0)
        # A fitted estimator is defined by these attributes (sklearn's own names); the centroids are ours.
        km.cluster_centers_ = self.centroids.copy()
        km.n_features_in_ = self.dim
        km._n_threads = 1
        km.n_iter_ = int(self.meta.get("niter", 0))
        km.n_steps_ = 0
        km.inertia_ = float(self.meta.get("mean_squared_distance", 0.0))
        km.labels_ = np.zeros(0, dtype=np.int32)
        with atomic_open(path, "wb") as f:
            joblib.dump(km, f)
        return Path(path)
