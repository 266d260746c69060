"""espnet2_ext: two-step discrete-unit multilingual ASR on top of ESPnet.

The pinned dependency set lives in requirements.txt (the same file the recipe's
environment setup installs from), so `pip install -e .` and `./run.sh` agree.
"""

from pathlib import Path

from setuptools import find_packages, setup

_REQ = Path(__file__).with_name("requirements.txt")
_DEV = {"pytest", "pytest-xdist", "ruff"}


def _requirements() -> tuple[list[str], list[str]]:
    runtime, dev = [], []
    for line in _REQ.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            (dev if line.split("==")[0] in _DEV else runtime).append(line)
    return runtime, dev


_runtime, _dev = _requirements()

setup(
    name="espnet2_ext",
    version="0.1.0",
    description="Multilingual ASR from discrete SSL units with a two-step (layer-weight) strategy, as an ESPnet extension",
    packages=find_packages(include=["espnet2_ext", "espnet2_ext.*"]),
    python_requires=">=3.10",
    install_requires=_runtime,
    extras_require={"test": _dev},
)
