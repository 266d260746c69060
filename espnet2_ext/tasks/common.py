"""Helpers shared by this project's ESPnet task classes (ASR and discrete ASR).

Both tasks build their models from their OWN copies of ESPnet's class registries and load weights
strictly; these are the pieces of that pattern that do not depend on the task (see the module
docstring of :mod:`espnet2_ext.tasks.asr` for why).
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from espnet2.train.class_choices import ClassChoices


def extend_choices(choices: ClassChoices, **extra: type) -> ClassChoices:
    """A new registry with ``choices``' name, base type and default, its classes and ``extra``.

    Raises:
        ValueError: a name in ``extra`` already names one of ESPnet's classes.
    """
    clash = set(extra) & set(choices.classes)
    if clash:
        raise ValueError(f"--{choices.name}: {sorted(clash)} already name ESPnet classes")
    return ClassChoices(
        name=choices.name,
        classes={**choices.classes, **extra},
        type_check=choices.base_type,
        default=choices.default,
        optional=choices.optional,
    )


def build_choice(choices: ClassChoices, args: argparse.Namespace, name: str, **kwargs) -> torch.nn.Module | None:
    """Instantiate ``args.<name>`` from ``choices`` with ``args.<name>_conf`` (None when unset)."""
    choice = getattr(args, name, None)
    if choice is None:
        return None
    component_class = choices.get_class(choice)
    return component_class(**kwargs, **(getattr(args, f"{name}_conf", None) or {}))


def read_token_list(value: str | list | tuple, option: str = "token_list") -> list[str]:
    """The token list given as ``--<option>``: a file (one token a line) or a list.

    Raises:
        ValueError: neither a path nor a list.
    """
    if isinstance(value, str):
        with open(value, encoding="utf-8") as f:
            return [line.rstrip() for line in f]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{option} must be a file path or a list of tokens, got {type(value).__name__}")


logger = logging.getLogger(__name__)


def set_aside_unreadable_checkpoint(output_dir: str | Path) -> Path | None:
    """Rename a truncated ``output_dir/checkpoint.pth`` to ``checkpoint.pth.unreadable`` and say so.

    ESPnet's trainer writes ``checkpoint.pth`` in place, not atomically: a job killed during that
    write leaves a truncated zip archive, and ``--resume true`` would then fail on it at every
    rerun. Without it the rerun trains from epoch 1; ESPnet seeds every epoch, so it ends with the
    same model. A complete archive (or none) is left alone.

    Returns:
        The new path of the set-aside file, or None.
    """
    path = Path(output_dir) / "checkpoint.pth"
    if not path.is_file() or zipfile.is_zipfile(path):
        return None
    aside = path.with_name(path.name + ".unreadable")
    path.replace(aside)
    logger.warning("%s is not a complete checkpoint (its write was cut short?): moved to %s; training restarts "
                   "from epoch 1", path, aside)  # fmt: skip
    return aside


class CheckedResumeMixin:
    """Mix into an ESPnet task (before it): ``main`` sets a truncated ``checkpoint.pth`` aside before resuming."""

    @classmethod
    def main(cls, args: argparse.Namespace | None = None, cmd: Sequence[str] | None = None) -> None:
        """ESPnet's ``AbsTask.main``, after :func:`set_aside_unreadable_checkpoint` when resuming."""
        if args is None:
            args = cls.get_parser().parse_args(cmd)
        if getattr(args, "resume", False) and getattr(args, "output_dir", None):
            set_aside_unreadable_checkpoint(args.output_dir)
        super().main(args=args)


class StrictLoadingMixin:
    """Mix into an ESPnet task (before it): ``build_model_from_file`` that loads the weights strictly.

    ESPnet's ``AbsTask.build_model_from_file`` loads with ``strict=False``, which silently keeps
    random weights for anything the file lacks; this one raises instead (see
    :func:`load_state_dict_checked`).
    """

    @classmethod
    def build_model_from_file(
        cls,
        config_file: Path | str | None = None,
        model_file: Path | str | None = None,
        device: str = "cpu",
    ) -> tuple[torch.nn.Module, argparse.Namespace]:
        """Rebuild a model from its config.yaml and load ``model_file`` strictly.

        Args:
            config_file: the training config.yaml (default: the one next to ``model_file``).
            model_file: a ``*.pth`` state dict saved by ESPnet's trainer (None: no weights).
            device: "cpu", "cuda", "cuda:N" or "mps".

        Returns:
            ``(model, args)`` like ESPnet's.

        Raises:
            ValueError: the file misses tensors the model needs (other than those a module
                rebuilds itself, e.g. a frozen SSL upstream's) or holds tensors it does not have.
        """
        config_file = config_next_to(config_file, model_file)
        # ESPnet's reads the config, builds through cls.build_model, moves the model and adds
        # adapters; the weights are loaded here.
        model, args = super().build_model_from_file(config_file, None, device)
        if model_file is not None:
            load_model_file_checked(model, model_file)
        return model, args


def config_next_to(config_file: Path | str | None, model_file: Path | str | None) -> Path | str:
    """``config_file``, or the ``config.yaml`` next to ``model_file`` when it is None.

    Raises:
        ValueError: both are None.
    """
    if config_file is not None:
        return config_file
    if model_file is None:
        raise ValueError("build_model_from_file needs a config_file or a model_file")
    return Path(model_file).parent / "config.yaml"


def load_model_file_checked(model: torch.nn.Module, model_file: Path | str) -> None:
    """Load a ``*.pth`` saved by ESPnet's trainer (or a DeepSpeed checkpoint) strictly into ``model``.

    Raises:
        ValueError: see :func:`load_state_dict_checked`.
    """
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    if "module" in state and isinstance(state["module"], dict):  # DeepSpeed checkpoint
        state = state["module"]
    load_state_dict_checked(model, state, source=model_file)


def load_state_dict_checked(model: torch.nn.Module, state: dict, source: str | Path = "state dict") -> None:
    """``model.load_state_dict(state)``, raising on any missing or unexpected tensor.

    A module may forgive tensors it rebuilds itself (:class:`~espnet2_ext.frontend.SSLFrontend`
    drops a frozen SSL upstream's from its state dict and its load hook accepts their absence);
    everything else must match exactly.

    Raises:
        ValueError: naming ``source`` and the first offending keys.
    """
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: does not match the model built from config.yaml: "
            f"{len(result.missing_keys)} missing tensor(s) {result.missing_keys[:5]}, "
            f"{len(result.unexpected_keys)} unexpected tensor(s) {result.unexpected_keys[:5]}"
        )
