"""The learned layer weights of step 1 as an artefact: ``layer_weights.json`` and its bar chart.

Step 1 trains an ASR model whose :class:`~espnet2_ext.frontend.SSLFrontend` sums the SSL model's
hidden states with weights ``softmax(frontend.layer_weights)``. :func:`read_from_checkpoint` reads
those logits from a checkpoint (never loading the SSL model); :class:`LayerWeights` is the record
step 2 freezes, written as ``layer_weights.json``::

    {"weights": [S floats: softmax over ALL S hidden states, 0.0 for states not in "layers", sum 1],
     "logits": [raw logits, one per entry of "layers"], "layers": [hidden-state indices],
     "normalize_layers": bool, "num_hidden_states": S, "upstream": {"name", "path", "cache_dir"},
     "upstream_sha256": str, "checkpoint": "<the .pth read>", "checkpoint_sha256": str}

Example:
    >>> lw = read_from_checkpoint("exp/step1_step0/config.yaml", "exp/step1_step0/valid.loss.ave.pth",
    ...                           "exp/step0/upstream.json")                    # doctest: +SKIP
    >>> lw.write("exp/step1_step0/layer_weights.json")                          # doctest: +SKIP
    >>> plot(lw, "exp/step1_step0/layer_weights.png")                           # doctest: +SKIP
    >>> LayerWeights.read("exp/step1_step0/layer_weights.json").weights        # doctest: +SKIP
    [0.02, 0.03, ..., 0.31]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from espnet2_ext.ssl.upstream import UpstreamSpec, checkpoint_sha256
from espnet2_ext.utils.fileio import DataError, atomic_open, atomic_write_text

_SUM_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class LayerWeights:
    """Learned layer weights of a step-1 model and where they come from.

    Attributes:
        logits: the raw ``frontend.layer_weights``, one per entry of ``layers``.
        layers: hidden-state indices the weighted sum runs over (0 = CNN/projection output,
            i = after transformer layer i).
        num_hidden_states: S, the upstream's number of hidden states.
        normalize_layers: whether each hidden state was layer-normed before the sum.
        upstream: the SSL model (:meth:`UpstreamSpec.to_dict`).
        upstream_sha256: its checkpoint's SHA-256 (from ``upstream.json``).
        checkpoint: path of the ``.pth`` the logits were read from.
        checkpoint_sha256: that file's SHA-256.
    """

    logits: list[float]
    layers: list[int]
    num_hidden_states: int
    normalize_layers: bool
    upstream: dict
    upstream_sha256: str
    checkpoint: str
    checkpoint_sha256: str

    def __post_init__(self) -> None:
        if len(self.logits) != len(self.layers) or not self.layers:
            raise ValueError(f"LayerWeights: {len(self.logits)} logits for {len(self.layers)} layers")
        if len(set(self.layers)) != len(self.layers) or not all(0 <= i < self.num_hidden_states for i in self.layers):
            raise ValueError(
                f"LayerWeights: layers must be distinct indices in [0, {self.num_hidden_states}), got {self.layers}"
            )
        if not all(math.isfinite(x) for x in self.logits):
            raise ValueError(f"LayerWeights: non-finite logits {self.logits} (training diverged)")
        UpstreamSpec.from_dict(self.upstream)  # a well-formed spec

    @property
    def weights(self) -> list[float]:
        """(S,) softmax of the logits placed at their hidden-state index, 0.0 elsewhere; sums to 1."""
        logits = np.asarray(self.logits, dtype=np.float64)
        selected = np.exp(logits - logits.max())
        selected /= selected.sum()
        full = np.zeros(self.num_hidden_states, dtype=np.float64)
        full[self.layers] = selected
        return full.tolist()

    def to_dict(self) -> dict:
        """The ``layer_weights.json`` record (``weights`` first, then the fields)."""
        return {"weights": self.weights, **dataclasses.asdict(self)}

    def write(self, path: str | os.PathLike) -> None:
        """Write ``layer_weights.json`` atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> LayerWeights:
        """Read and check a ``layer_weights.json``.

        Raises:
            DataError: naming ``path``: missing, not JSON, a missing/unknown key, or weights that
                do not match the logits (a file edited by hand).
        """
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read layer weights ({err}); rerun stage 6 (weights)") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: expected a JSON object; rerun stage 6 (weights)")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted((fields | {"weights"}) - set(record))
        if missing:
            raise DataError(f"{path}: missing key(s) {missing}; rerun stage 6 (weights)")
        try:
            layer_weights = cls(**{k: record[k] for k in fields})
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: {err}") from None
        stored = np.asarray(record["weights"], dtype=np.float64)
        if stored.shape != (layer_weights.num_hidden_states,) or not np.allclose(
            stored, layer_weights.weights, atol=_SUM_TOLERANCE
        ):
            raise DataError(f"{path}: 'weights' is not the softmax of 'logits' over 'layers'; rerun stage 6 (weights)")
        return layer_weights


def read_from_checkpoint(
    config: str | os.PathLike, model_file: str | os.PathLike, upstream_json: str | os.PathLike
) -> LayerWeights:
    """Read the learned layer weights of a step-1 model without building it.

    Args:
        config: the run's ``config.yaml`` (``frontend: ssl``, ``layer_selection: weighted``, frozen
            upstream).
        model_file: a ``*.pth`` state dict saved by ESPnet's trainer (an epoch, a best or an average).
        upstream_json: the ``upstream.json`` record of the SSL model the run was trained on (gives S
            and the checkpoint hash; must name the same upstream as ``config``).

    Raises:
        DataError: naming the file that is wrong and what to do.
    """
    import torch
    import yaml

    from espnet2_ext.tasks.lr_groups import LAYER_WEIGHTS_PARAM  # imports ESPnet's task module (slow)

    config, model_file, upstream_json = Path(config), Path(model_file), Path(upstream_json)
    try:
        conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{config}: cannot read the step-1 config ({err})") from None
    frontend_conf = conf.get("frontend_conf") or {}
    if conf.get("frontend") != "ssl" or frontend_conf.get("layer_selection", "weighted") != "weighted":
        raise DataError(
            f"{config}: not a step-1 model (frontend {conf.get('frontend')!r}, layer_selection "
            f"{frontend_conf.get('layer_selection')!r}); step 1 needs frontend ssl with layer_selection weighted"
        )
    if not frontend_conf.get("freeze_upstream", True):
        raise DataError(
            f"{config}: the upstream was trained with the layer weights (freeze_upstream false), so the weights "
            "do not apply to the SSL model in upstream.json; set frontend_conf.freeze_upstream true and retrain"
        )
    try:
        record = json.loads(upstream_json.read_text(encoding="utf-8"))
        spec = UpstreamSpec.from_dict(record["upstream"]).to_dict()
        num_states, upstream_sha = int(record["num_hidden_states"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{upstream_json}: not an upstream record ({err!r}); rerun the stage that writes it") from None
    if frontend_conf.get("upstream") != spec:
        raise DataError(
            f"{config}: trained on upstream {frontend_conf.get('upstream')}, but {upstream_json} names {spec}; "
            f"the SSL model changed after training: remove {config.parent} and rerun stage 5 (step1)"
        )
    if not model_file.is_file():
        kept = sorted(p.name for p in model_file.parent.glob("*.pth"))
        raise DataError(f"{model_file}: not found; checkpoints in {model_file.parent}: {kept or 'none'}")
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    if LAYER_WEIGHTS_PARAM not in state:
        raise DataError(f"{model_file}: no {LAYER_WEIGHTS_PARAM} tensor; is this a step-1 checkpoint of {config}?")
    logits = state[LAYER_WEIGHTS_PARAM].double().flatten().tolist()
    layers = frontend_conf.get("layers")
    layers = list(range(num_states)) if layers is None else [int(i) for i in layers]
    if len(logits) != len(layers):
        raise DataError(
            f"{model_file}: {len(logits)} layer-weight logits, but {config} sums {len(layers)} hidden states of "
            f"{upstream_json}; the checkpoint and the config do not belong together"
        )
    return LayerWeights(
        logits=logits,
        layers=layers,
        num_hidden_states=num_states,
        normalize_layers=bool(frontend_conf.get("normalize_layers", False)),
        upstream=spec,
        upstream_sha256=upstream_sha,
        checkpoint=str(model_file),
        checkpoint_sha256=checkpoint_sha256(model_file),
    )


def plot(layer_weights: LayerWeights, path: str | os.PathLike, title: str | None = None) -> None:
    """Bar chart of the weight of every hidden state (PNG, written atomically).

    Args:
        layer_weights: the record to draw.
        path: output ``.png``.
        title: first title line (default: the upstream's name and path); the checkpoint and its
            hash form the second line.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    weights = layer_weights.weights
    spec = layer_weights.upstream
    head = title or f"{spec['name']}" + (f" ({spec['path']})" if spec.get("path") else "")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(weights) + 2.0), 3.5))
    try:
        ax.bar(range(len(weights)), weights, color="tab:blue")
        ax.axhline(1.0 / len(layer_weights.layers), color="gray", linestyle="--", linewidth=1, label="uniform")
        ax.set_xticks(range(len(weights)))
        ax.set_xlabel("hidden state (0 = CNN output, i = after transformer layer i)")
        ax.set_ylabel("softmax weight")
        ax.set_title(
            f"{head}\n{Path(layer_weights.checkpoint).name} (sha256 {layer_weights.checkpoint_sha256[:12]})",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)
