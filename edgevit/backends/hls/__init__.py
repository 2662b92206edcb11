"""FPGA backend: a fixed-point MoE-ViT accelerator in HLS C++ (``hls/``), generated from a model.

convert (torch M3ViT -> layer list + weights) -> reference (bit-accurate ap_fixed numpy model) -> writer
(project folder: config header, top, testbench, weight image, Tcl) -> csim (g++ build + run, compared
layer by layer) -> schedule / resources (cycles and DSP/BRAM/URAM/LUT for a board).
"""
from . import backend  # noqa: F401  (registers "hls")
