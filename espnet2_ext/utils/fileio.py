"""Small, strict file helpers shared by every stage.

Two rules hold everywhere in the project:

* **Atomic outputs.** A file is written under a temporary name in the same directory and
  renamed into place only when complete, so a killed job never leaves a file that looks done.
* **Errors name the file and line.** Every reader of a Kaldi-style text file reports bad input
  as ``DataError("path:lineno: what is wrong; what to do")``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
# mkstemp's random part: 8 characters of [a-z0-9_]
_TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# errno values of a full disk or quota
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DataError(ValueError):
    """Bad input data. The message names the file (and line) and what to do about it."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file renamed into place on success.

    On any exception the temporary file is removed and ``path`` is left untouched. A full disk
    (``ENOSPC``/``EDQUOT``) is re-raised as the same ``OSError`` with a message naming ``path``.
    Only a killed process (SIGKILL) can leave the temporary file behind; :func:`stale_temp_files`
    finds those.

    Example:
        >>> with atomic_open(tmp / "text") as f:   # doctest: +SKIP
        ...     f.write("utt1 HELLO\\n")
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open only writes; got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _disk_error(e, path) from e
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise _disk_error(e, path) from e
        raise


def _disk_error(e: OSError, path: Path) -> OSError:
    """``e`` again (same class and errno), its message naming ``path`` and the fix when the disk is full."""
    if e.errno not in _DISK_FULL:
        return e
    return type(e)(
        e.errno,
        f"{os.strerror(e.errno)} while writing {path}; nothing was written there (the previous file, if any, "
        f"is unchanged). Free space on the file system of {path.parent} and rerun the stage",
    )


def stale_temp_files(root: str | os.PathLike) -> list[Path]:
    """Temporary files :func:`atomic_open` left under ``root`` when its process was killed (SIGKILL).

    Only names of the form ``.<name>.<8 random chars>.tmp`` are returned, sorted.
    """
    return sorted(p for p in Path(root).rglob(f".*{TMP_SUFFIX}") if _TMP_RE.match(p.name) and p.is_file())


def remove_stale_temp_files(root: str | os.PathLike) -> list[Path]:
    """Remove the :func:`stale_temp_files` under ``root``; call it only when no job writes there any more.

    A stage calls it once its jobs are all finished, so a rerun after a kill ends with the same
    files as an uninterrupted run.

    Returns:
        The removed paths (logged as a warning when there are any).
    """
    stale = stale_temp_files(root)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.warning("%s: removed %d temporary file(s) left by killed jobs (first: %s)", root, len(stale), stale[0])
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_kaldi_text(path: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """Write ``key value`` lines atomically, in the order given.

    Args:
        path: output file, e.g. ``data/train/text``.
        rows: ``(key, value)`` pairs; ``value`` may be empty (the line is then just the key).
    """
    with atomic_open(path) as f:
        for key, value in rows:
            if not key or any(c.isspace() for c in key):
                raise DataError(f"{path}: refusing to write key {key!r}: keys must be non-empty without whitespace")
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")


def iter_kaldi_text(path: str | os.PathLike, allow_empty_value: bool = False) -> Iterator[tuple[int, str, str]]:
    """Yield ``(lineno, key, value)`` from a ``key value`` file (value = rest of the line).

    Raises:
        DataError: file missing, not UTF-8, or a line without a value (unless allowed).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; run the stage that writes it first")
    for lineno, line in iter_utf8_lines(path):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            raise DataError(f"{path}:{lineno}: empty line; remove it")
        parts = line.split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise DataError(f"{path}:{lineno}: '{key}' has no value; expected '<key> <value>'")
        yield lineno, key, value


def iter_utf8_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(lineno, line)`` of a UTF-8 text file, line endings kept.

    Lines are decoded one by one (a text-mode file decodes whole blocks, so its error would
    point at the wrong line).

    Raises:
        DataError: ``path:lineno`` of the first line that is not valid UTF-8.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line); "
                    "re-encode the file as UTF-8"
                ) from None


def read_kaldi_text(path: str | os.PathLike, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a ``key value`` file into an insertion-ordered dict, rejecting duplicate keys.

    Raises:
        DataError: naming ``path:lineno`` for duplicates and malformed lines.
    """
    out: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for lineno, key, value in iter_kaldi_text(path, allow_empty_value=allow_empty_value):
        if key in out:
            raise DataError(f"{path}:{lineno}: duplicate id '{key}' (first on line {first_seen[key]}); ids must be unique")
        out[key] = value
        first_seen[key] = lineno
    return out


def listing(items: list[str], limit: int = 20, sep: str = "; ") -> str:
    """Join the first ``limit`` items for an error message, saying how many more there are.

    Example:
        >>> listing(["a", "b", "c"], limit=2)
        'a; b; ... and 1 more'
    """
    shown = sep.join(items[:limit])
    return shown + (f"{sep}... and {len(items) - limit} more" if len(items) > limit else "")
