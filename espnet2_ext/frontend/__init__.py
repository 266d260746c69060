"""ESPnet frontends: the layer-weighted SSL frontend of step 1 (and step-0 fine-tuning)."""

from espnet2_ext.frontend.ssl_frontend import LAYER_SELECTIONS, SSLFrontend

__all__ = ["LAYER_SELECTIONS", "SSLFrontend"]
