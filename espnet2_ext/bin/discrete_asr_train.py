"""Train (or collect stats for) a step-2 discrete-unit ASR model (ESPnet's MT task, ``model: discrete_asr``).

The same options as ESPnet's ``espnet2.bin.mt_train``; only the task differs
(:class:`espnet2_ext.tasks.discrete_asr.DiscreteASRTask`). The units are the source text (one CJK
character per deduplicated unit, tokenised with the source BPE model); the transcript is the target.
Example (what stage 9 of run.sh runs)::

    python -m espnet2_ext.bin.discrete_asr_train --config conf/step2/demo.yaml --ngpu 0 \\
        --src_token_type bpe --src_bpemodel dump/units/twostep/src_bpe/bpe.model \\
        --src_token_list dump/units/twostep/src_bpe/tokens.txt \\
        --token_type char --token_list data/token_list/char/tokens.txt \\
        --train_data_path_and_name_and_type dump/units/twostep/train/text,src_text,text \\
        --train_data_path_and_name_and_type data/train/text,text,text \\
        --train_shape_file exp/step2_twostep/stats/train/src_text_shape \\
        --train_shape_file exp/step2_twostep/stats/train/text_shape \\
        --valid_data_path_and_name_and_type dump/units/twostep/dev/text,src_text,text \\
        --valid_data_path_and_name_and_type data/dev/text,text,text \\
        --valid_shape_file exp/step2_twostep/stats/valid/src_text_shape \\
        --valid_shape_file exp/step2_twostep/stats/valid/text_shape \\
        --fold_length 500 --fold_length 150 --output_dir exp/step2_twostep
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's MT training parser, with this project's registries (default ``--model discrete_asr``)."""
    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask

    return DiscreteASRTask.get_parser()


def main(cmd: Sequence[str] | None = None) -> None:
    """Run ESPnet's training (or ``--collect_stats true``) with our task; ``cmd`` defaults to ``sys.argv``."""
    from espnet2_ext.tasks.discrete_asr import DiscreteASRTask  # imports ESPnet (~16 s): not at module import

    DiscreteASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
