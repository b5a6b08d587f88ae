"""Today's low-precision formats (fp8, OCP microscaling, NVFP4), emulated in float32.

``formats`` names them, ``rounding`` rounds to their element grids, ``recipes`` chooses the
scale of a plain fp8 tensor, ``blocks`` quantises microscaled blocks, ``quantize`` applies a
format and recipe and counts what was lost, ``sqnr`` measures and predicts the damage in dB.
"""
