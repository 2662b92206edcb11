"""The linear unit of the FPGA MoE-ViT design as RTL (Amaranth): a ROWS x COLS array of multiply-accumulate PEs.

Same arithmetic as the HLS kernel ``ev_linear`` (``hls/include/edgevit/moe_vit.h``) and the numpy reference
(:meth:`edgevit.backends.hls.reference._Reference.linear`), on raw integers:

    acc[r][c] = (b[c] << (Fa + Fw - Fb)) + sum_i x[r][i] * w[i][c]       exact (ACC_WIDTH bits, no overflow)
    y[r][c]   = saturate((acc >> Fw) + acc[Fw - 1])                      AP_RND + AP_SAT to the act format

with act ap_fixed<24,10> (Fa 14), weight ap_fixed<16,2> (Fw 14), bias ap_fixed<32,12> (Fb 20): the bias is
shifted left by 8 and the accumulator (Fa + Fw = 28 fraction bits) is rounded by 14 bits to the act format.
PE (r, c) is one token row x one output column, as the HLS kernel's PE_ROWS x PE_COLS; per cycle every PE takes
one input element x[r][i] (shared along its row) and one weight w[i][c] (shared down its column).

:class:`MacTile` is the PE array (pipelined: operand registers, product registers, accumulators);
:class:`LinearUnit` adds the weight and input memories (one word = one input index i: COLS weights, ROWS
activations), the bias registers and the sequencer that streams ``n`` words through the array and latches the
requantized results.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Elaboratable, Module, Mux, Signal, signed
from amaranth.lib.memory import Memory

from ..backends.hls.reference import Formats

__all__ = ["TileShape", "MacTile", "LinearUnit", "ACT", "WEIGHT", "BIAS", "BIAS_SHIFT", "REQUANT_SHIFT",
           "PIPELINE_DEPTH"]

_F = Formats()
ACT, WEIGHT, BIAS = _F.act, _F.weight, _F.bias
BIAS_SHIFT = ACT.frac + WEIGHT.frac - BIAS.frac      # 8: bias aligned to the accumulator's fraction bits
REQUANT_SHIFT = WEIGHT.frac                          # 14: accumulator (Fa + Fw) -> act (Fa)
PIPELINE_DEPTH = 4                                   # memory read, operand regs, product regs, accumulate


@dataclass(frozen=True)
class TileShape:
    """``rows`` tokens x ``cols`` outputs per cycle; ``max_in``: the longest input vector (memory depth)."""

    rows: int
    cols: int
    max_in: int = 64

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1 or self.max_in < 1:
            raise ValueError(f"tile {self.rows}x{self.cols}, max_in {self.max_in}: all must be >= 1")

    @property
    def acc_width(self) -> int:
        """Bits that hold any accumulator exactly: products are ACT+WEIGHT bits, the shifted bias as wide;
        ``max_in`` products plus the bias add ceil(log2(max_in + 1)) bits."""
        product = ACT.width + WEIGHT.width
        return max(product, BIAS.width + BIAS_SHIFT) + (self.max_in).bit_length()

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.cols}"


def requantize_signal(m: Module, acc: Signal, y: Signal) -> None:
    """y = AP_RND + AP_SAT of ``acc`` (Fa + Fw fraction bits) to the act format: add the half bit, shift, clip."""
    rounded = Signal(signed(len(acc) - REQUANT_SHIFT + 1), name=f"{y.name}_rnd")
    m.d.comb += rounded.eq((acc >> REQUANT_SHIFT) + acc[REQUANT_SHIFT - 1])
    hi, lo = ACT.raw_max, ACT.raw_min
    m.d.comb += y.eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded)))


class MacTile(Elaboratable):
    """ROWS x COLS PEs. ``clear`` loads every accumulator with its column's bias (<< BIAS_SHIFT); ``valid`` with
    ``x`` (ROWS act values) and ``w`` (COLS weights) adds x[r] * w[c] to PE (r, c) three cycles later.
    ``y`` holds the requantized accumulators (combinational from them)."""

    def __init__(self, shape: TileShape):
        self.shape = shape
        R, C = shape.rows, shape.cols
        self.clear = Signal()
        self.bias = [Signal(signed(BIAS.width), name=f"bias_{c}") for c in range(C)]
        self.valid = Signal()
        self.x = [Signal(signed(ACT.width), name=f"x_{r}") for r in range(R)]
        self.w = [Signal(signed(WEIGHT.width), name=f"w_{c}") for c in range(C)]
        self.acc = [[Signal(signed(shape.acc_width), name=f"acc_{r}_{c}") for c in range(C)] for r in range(R)]
        self.y = [[Signal(signed(ACT.width), name=f"y_{r}_{c}") for c in range(C)] for r in range(R)]

    def elaborate(self, platform):
        m = Module()
        R, C = self.shape.rows, self.shape.cols
        x1 = [Signal.like(s, name=f"x1_{r}") for r, s in enumerate(self.x)]
        w1 = [Signal.like(s, name=f"w1_{c}") for c, s in enumerate(self.w)]
        v1, v2 = Signal(), Signal()
        m.d.sync += [v1.eq(self.valid), v2.eq(v1)]
        m.d.sync += [a.eq(b) for a, b in zip(x1, self.x)] + [a.eq(b) for a, b in zip(w1, self.w)]
        for r in range(R):
            for c in range(C):
                p = Signal(signed(ACT.width + WEIGHT.width), name=f"p_{r}_{c}")
                m.d.sync += p.eq(x1[r] * w1[c])
                acc = self.acc[r][c]
                with m.If(self.clear):
                    m.d.sync += acc.eq(self.bias[c] << BIAS_SHIFT)
                with m.Elif(v2):
                    m.d.sync += acc.eq(acc + p)
                requantize_signal(m, acc, self.y[r][c])
        return m


class LinearUnit(Elaboratable):
    """MAC tile + weight/input memories + bias registers + sequencer.

    Load (one write per cycle, ``we`` with ``wsel`` 0 weights / 1 inputs / 2 bias): weight word i is COLS 16-bit
    fields (w[i][0] in the low bits), input word i is ROWS 24-bit fields (x[0][i] low), the bias word COLS 32-bit
    fields. Then ``n`` (1..max_in) and a ``start`` pulse; ``done`` pulses when ``y`` (ROWS*COLS 24-bit fields,
    row-major, (0, 0) low) holds the results; ``busy`` is high in between.
    """

    def __init__(self, shape: TileShape):
        self.shape = shape
        R, C = shape.rows, shape.cols
        self.w_bits, self.x_bits, self.b_bits = C * WEIGHT.width, R * ACT.width, C * BIAS.width
        self.data_bits = max(self.w_bits, self.x_bits, self.b_bits)
        self.we = Signal()
        self.wsel = Signal(2)
        self.waddr = Signal(range(shape.max_in))
        self.wdata = Signal(self.data_bits)
        self.n = Signal(range(shape.max_in + 1))
        self.start = Signal()
        self.busy = Signal()
        self.done = Signal()
        self.y = Signal(R * C * ACT.width)

    def ports(self) -> list[Signal]:
        return [self.we, self.wsel, self.waddr, self.wdata, self.n, self.start, self.busy, self.done, self.y]

    def elaborate(self, platform):
        m = Module()
        shape = self.shape
        R, C = shape.rows, shape.cols
        m.submodules.tile = tile = MacTile(shape)
        m.submodules.wmem = wmem = Memory(shape=self.w_bits, depth=shape.max_in, init=[])
        m.submodules.xmem = xmem = Memory(shape=self.x_bits, depth=shape.max_in, init=[])
        ww, xw = wmem.write_port(), xmem.write_port()
        wr, xr = wmem.read_port(domain="sync"), xmem.read_port(domain="sync")
        bias = Signal(self.b_bits)
        m.d.comb += [ww.addr.eq(self.waddr), xw.addr.eq(self.waddr),
                     ww.data.eq(self.wdata[:self.w_bits]), xw.data.eq(self.wdata[:self.x_bits]),
                     ww.en.eq(self.we & (self.wsel == 0)), xw.en.eq(self.we & (self.wsel == 1))]
        with m.If(self.we & (self.wsel == 2)):
            m.d.sync += bias.eq(self.wdata[:self.b_bits])
        m.d.comb += [tile.bias[c].eq(bias[c * BIAS.width:(c + 1) * BIAS.width]) for c in range(C)]

        i = Signal(range(shape.max_in + 1))
        issued = Signal()        # a read was issued this cycle: its data is on the read ports next cycle
        data_valid = Signal()
        drain = Signal(range(PIPELINE_DEPTH + 2))
        m.d.comb += [wr.addr.eq(i), xr.addr.eq(i), wr.en.eq(1), xr.en.eq(1)]
        m.d.sync += data_valid.eq(issued)
        m.d.comb += [tile.valid.eq(data_valid)]
        m.d.comb += [tile.w[c].eq(wr.data[c * WEIGHT.width:(c + 1) * WEIGHT.width]) for c in range(C)]
        m.d.comb += [tile.x[r].eq(xr.data[r * ACT.width:(r + 1) * ACT.width]) for r in range(R)]
        m.d.sync += self.done.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += tile.clear.eq(1)
                    m.d.sync += [i.eq(0), drain.eq(0)]
                    with m.If(self.n == 0):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), issued.eq(1)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == self.n - 1):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == PIPELINE_DEPTH):
                    m.d.sync += self.y.eq(Cat(*(tile.y[r][c] for r in range(R) for c in range(C))))
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m

