"""Train (or collect stats for) an ESPnet ASR model that may use the SSL frontend (``frontend: ssl``).

The same options as ESPnet's ``espnet2.bin.asr_train``; only the task differs
(:class:`espnet2_ext.tasks.asr.ASRTask`). Example (step 1, CTC on a weighted sum of frozen SSL layers)::

    python -m espnet2_ext.bin.asr_train --config conf/step1/tiny.yaml \\
        --frontend_conf upstream.path=exp/ssl/xlsr_ft --ngpu 0 --use_amp false --use_tensorboard false \\
        --token_type char --token_list data/token_list/char/tokens.txt \\
        --train_data_path_and_name_and_type dump/raw/train/wav.scp,speech,sound \\
        --train_data_path_and_name_and_type dump/raw/train/text,text,text \\
        --train_shape_file exp/asr_stats/train/speech_shape --train_shape_file exp/asr_stats/train/text_shape \\
        --valid_data_path_and_name_and_type dump/raw/dev/wav.scp,speech,sound \\
        --valid_data_path_and_name_and_type dump/raw/dev/text,text,text \\
        --valid_shape_file exp/asr_stats/valid/speech_shape --valid_shape_file exp/asr_stats/valid/text_shape \\
        --fold_length 80000 --fold_length 150 --output_dir exp/asr_step1
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's ASR training parser, with ``--frontend ssl`` among the choices."""
    from espnet2_ext.tasks.asr import ASRTask

    return ASRTask.get_parser()


def main(cmd: Sequence[str] | None = None) -> None:
    """Run ESPnet's training (or ``--collect_stats true``) with our task; ``cmd`` defaults to ``sys.argv``."""
    from espnet2_ext.tasks.asr import ASRTask  # imports ESPnet (~16 s): not at module import

    ASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
