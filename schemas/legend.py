"""The project's shape legend: what each capital letter of an array name's suffix means.

Arrays and tensors carry their axes as a suffix of capitals, one letter per axis in order:
``dmel_TM`` is (dMel frames, mel channels), ``w_gate_EID`` is (experts, expert hidden width,
feature width). A letter means the same axis in every package (data contract, pipelines,
synth, trainer, kernels); a module's docstring may list the letters it uses, but only with these
meanings. A digit is an axis of that literal size (``weight_R1`` broadcasts over its last axis,
``parts_TX2`` holds a real and an imaginary part).

====== ==========================================================================================
letter axis
====== ==========================================================================================
A      query heads of attention
B      rows of a batch
C      channels of a signal: audio channels of a recording, or the 3 colour channels of a frame
D      feature width: the model width, or the size of one embedding vector
E      experts of an MoE layer
F      video frames (10 fps: 2 per chunk and per temporal patch)
G      key/value heads of grouped-query attention
H      pixel rows (height; 40 in a patch)
I      hidden width of an MLP: one expert's SwiGLU, the flow head's
J      experts chosen per token (top-k); slot j of a token
K      chunks of the 200 ms micro-turn grid
L      positions of a sequence (one batch row)
M      mel channels (80)
N      audio samples (16 kHz unless the name says another rate)
P      video patches (2 frames x 40 x 40 px x 3 colours): of one chunk, or of every chunk
Q      width of one attention head
R      routes: (token, chosen expert) pairs of an MoE layer, R = U J
S      dMel bins (16 quantisation levels)
T      frames of the 50 ms audio grid (the dMel hop; 4 per chunk)
U      tokens: positions of a batch flattened into rows (all B L, a selection such as a loss's
       targets, or a decode batch; what enters an MoE layer)
V      vocabulary entries
W      pixel columns (width; 40 in a patch)
X      frequency bins of a spectrum (801 in the dMel STFT)
Y      values of one flattened sub-patch of the hMLP (frames x rows x columns x colours)
Z      side of the hMLP's grid of sub-patches
====== ==========================================================================================

A lower-case letter after the capitals is half of that axis (``cos_B1Lq``: half a head width, the
rotary pairs). O is never used (it reads as 0). An axis that fits none of these in one function is named in
words (``per_speaker``, ``rows``) rather than given a letter that means something else.
"""

from __future__ import annotations

from types import MappingProxyType

LEGEND = MappingProxyType({
    "A": "query heads of attention",
    "B": "rows of a batch",
    "C": "channels of a signal: audio channels of a recording, or the 3 colour channels of a frame",
    "D": "feature width: the model width, or the size of one embedding vector",
    "E": "experts of an MoE layer",
    "F": "video frames (10 fps: 2 per chunk and per temporal patch)",
    "G": "key/value heads of grouped-query attention",
    "H": "pixel rows (height; 40 in a patch)",
    "I": "hidden width of an MLP: one expert's SwiGLU, the flow head's",
    "J": "experts chosen per token (top-k); slot j of a token",
    "K": "chunks of the 200 ms micro-turn grid",
    "L": "positions of a sequence (one batch row)",
    "M": "mel channels (80)",
    "N": "audio samples (16 kHz unless the name says another rate)",
    "P": "video patches (2 frames x 40 x 40 px x 3 colours): of one chunk, or of every chunk",
    "Q": "width of one attention head",
    "R": "routes: (token, chosen expert) pairs of an MoE layer, R = U J",
    "S": "dMel bins (16 quantisation levels)",
    "T": "frames of the 50 ms audio grid (the dMel hop; 4 per chunk)",
    "U": ("tokens: positions of a batch flattened into rows (all B L, a selection such as a loss's targets, "
          "or a decode batch; what enters an MoE layer)"),
    "V": "vocabulary entries",
    "W": "pixel columns (width; 40 in a patch)",
    "X": "frequency bins of a spectrum (801 in the dMel STFT)",
    "Y": "values of one flattened sub-patch of the hMLP (frames x rows x columns x colours)",
    "Z": "side of the hMLP's grid of sub-patches",
})
"""Letter -> the one axis it names, project-wide (the table of this module's docstring)."""


def axes(suffix: str) -> tuple[str, ...]:
    """The meaning of each axis of a shape suffix, in order (``axes("TM")``).

    A digit stands for an axis of that literal size. Raises ``ValueError`` naming the first
    character that is neither a legend letter nor a digit.
    """
    meanings = []
    for char in suffix:
        if char.isdigit():
            meanings.append(f"an axis of size {char}")
        elif char in LEGEND:
            meanings.append(LEGEND[char])
        else:
            raise ValueError(f"{char!r} in shape suffix {suffix!r} is not in microturn.schemas.legend")
    return tuple(meanings)
