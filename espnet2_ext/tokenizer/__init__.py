"""Discrete speech units (run.sh stages 7-8) and the pieces they are made of.

==================  ===========================================================================
``features``        the one feature spec (learned / single / uniform / mfcc) and its extractor
``kmeans``          the project's one k-means (faiss) and nearest-centroid assignment
``unit_model``      centroids + feature spec on disk; ESPnet ``km_<K>.mdl`` export
``dump``            sharded feature dumps for k-means (npy + lengths, mmap) and unit dumps
``unit_text``       dedup and the one unit-id -> character mapping
``bpe``             unit strings, source BPE (sentencepiece) and ESPnet's token list
``stats``           per-set token rates and the challenge bitrate
``systems``         the unit systems of ``conf/units/<recipe>.yaml``
==================  ===========================================================================
"""

from espnet2_ext.tokenizer.kmeans import assign, fit_kmeans

__all__ = ["assign", "fit_kmeans"]
