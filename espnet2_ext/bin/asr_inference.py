"""Decode with an ASR model trained by :mod:`espnet2_ext.bin.asr_train` (e.g. with ``frontend: ssl``).

ESPnet's ``espnet2.bin.asr_inference`` hard-wires ESPnet's ``ASRTask`` (a module-level name) to
rebuild the model from config.yaml, and that task cannot build our frontend. Its ``Speech2Text``
takes no task argument, so :func:`espnet_inference_with_our_task` points that one name at our task
(a subclass, identical except for the extra registry entries and the strict loading) for as long as
a model is being built or a decoding run lasts, and puts ESPnet's back afterwards. Everything else
(options, beam search, output files) is ESPnet's::

    python -m espnet2_ext.bin.asr_inference --ngpu 0 --beam_size 5 --ctc_weight 1.0 \\
        --data_path_and_name_and_type dump/raw/test_1h/wav.scp,speech,sound \\
        --asr_train_config exp/asr_step1/config.yaml --asr_model_file exp/asr_step1/valid.loss.best.pth \\
        --output_dir exp/asr_step1/decode_test_1h

In Python::

    >>> from espnet2_ext.bin.asr_inference import Speech2Text                  # doctest: +SKIP
    >>> speech2text = Speech2Text("exp/asr_step1/config.yaml", "exp/asr_step1/valid.loss.best.pth")  # doctest: +SKIP
    >>> text, tokens, token_ids, hyp = speech2text(wav)[0]                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from espnet2.bin import asr_inference as espnet_inference

from espnet2_ext.tasks.asr import ASRTask


@contextlib.contextmanager
def espnet_inference_with_our_task() -> Iterator[None]:
    """Within this context ESPnet's ``asr_inference`` (Speech2Text, inference) uses our ASRTask."""
    original = espnet_inference.ASRTask
    espnet_inference.ASRTask = ASRTask
    try:
        yield
    finally:
        espnet_inference.ASRTask = original


class Speech2Text(espnet_inference.Speech2Text):
    """ESPnet's ``Speech2Text`` whose model is rebuilt (and strictly loaded) by our ASRTask.

    Takes exactly ESPnet's arguments (``asr_train_config``, ``asr_model_file``, ``beam_size``,
    ``ctc_weight``, ...).
    """

    def __init__(self, *args, **kwargs) -> None:
        with espnet_inference_with_our_task():
            super().__init__(*args, **kwargs)


def get_parser():
    """ESPnet's ASR decoding parser (the options do not depend on the task)."""
    return espnet_inference.get_parser()


def main(cmd: Sequence[str] | None = None) -> None:
    """Run ESPnet's ``asr_inference`` with our task; ``cmd`` defaults to ``sys.argv``."""
    with espnet_inference_with_our_task():
        espnet_inference.main(cmd)


if __name__ == "__main__":
    main()
