"""SSL upstreams: loading s3prl hub names and local checkpoints with exact, padding-safe outputs."""

from espnet2_ext.ssl.upstream import (
    LOCAL_UPSTREAMS,
    SAMPLE_RATE,
    SSLUpstream,
    UpstreamSpec,
    checkpoint_sha256,
    infer_upstream_name,
)

__all__ = [
    "LOCAL_UPSTREAMS",
    "SAMPLE_RATE",
    "SSLUpstream",
    "UpstreamSpec",
    "checkpoint_sha256",
    "infer_upstream_name",
]
