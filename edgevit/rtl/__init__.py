"""The open FPGA flow: the linear unit of the MoE-ViT design as RTL (Amaranth), simulated with cocotb against the
HLS backend's fixed-point reference, synthesised and placed with Yosys + nextpnr into a bitstream.

mac (the PE array and its memories) -> uart (UART + command protocol top) -> sim (Verilog, Icarus, cocotb)
-> build (synthesis, place and route, bitstream, utilisation and Fmax into a manifest); protocol: the host side.
"""
from .mac import LinearUnit, MacTile, TileShape
from .protocol import Client, ProtocolError, Tile, random_tile, reference

__all__ = ["TileShape", "MacTile", "LinearUnit", "Tile", "reference", "random_tile", "Client", "ProtocolError"]
