"""Decoding raw audio with a packed model: the pack format and the audio-in recognizer."""

from espnet2_ext.inference.pack import Pack, load_pack, make_pack

__all__ = ["Pack", "Recognizer", "load_pack", "make_pack"]


def __getattr__(name: str):
    # the recognizer imports ESPnet (~16 s): only when it is asked for
    if name == "Recognizer":
        from espnet2_ext.inference.recognizer import Recognizer

        return Recognizer
    raise AttributeError(name)
