"""A UART (8N1) and the command protocol that drives the :class:`~edgevit.rtl.mac.LinearUnit` from a host.

Protocol (host -> board; every multi-byte value little-endian; raw fixed-point integers, two's complement):

===========  ==============================================  =================================================
command      then the host sends                              the board answers
===========  ==============================================  =================================================
``I``        -                                                ``E V rows cols max_in(2 bytes)``
``N``        n, 2 bytes (1..max_in; the input length)          ``K`` (``?``: out of range, n unchanged)
``B``        COLS biases, 4 bytes each (ap_fixed<32,12>)        ``K``
``W``        n words of COLS weights, 2 bytes each, w[i][c]     ``K``
``X``        n words of ROWS inputs, 3 bytes each, x[r][i]      ``K``
``R``        -                                                ROWS*COLS results, 3 bytes each, y[r][c] row-major
other        -                                                ``?``
===========  ==============================================  =================================================

``W`` and ``X`` take as many words as the last ``N`` said. Weights and biases stay loaded: a new input block
(``X``) and ``R`` reuse them. :mod:`edgevit.rtl.host` speaks the host side.
"""
from __future__ import annotations

from amaranth import Cat, Elaboratable, Module, Signal

from .mac import ACT, BIAS, WEIGHT, LinearUnit, TileShape

__all__ = ["UartRx", "UartTx", "UartLinear", "PROTOCOL"]

PROTOCOL = {"identify": b"I", "length": b"N", "bias": b"B", "weights": b"W", "inputs": b"X", "run": b"R",
            "ack": b"K", "error": b"?", "magic": b"EV"}


class UartRx(Elaboratable):
    """8N1 receiver: ``divisor`` clock cycles per bit; ``valid`` pulses one cycle with ``data``."""

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError("UART divisor must be >= 4 clock cycles per bit")
        self.divisor = divisor
        self.rx = Signal(init=1)
        self.data = Signal(8)
        self.valid = Signal()

    def elaborate(self, platform):
        m = Module()
        sync1, rx = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), rx.eq(sync1)]          # two flip-flops against metastability
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), bit.eq(0)]  # to the middle of bit 0
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1), timer.eq(self.divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):                              # a framing error drops the byte
                        m.d.sync += [self.data.eq(shreg), self.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UartTx(Elaboratable):
    """8N1 transmitter: ``start`` with ``data`` when ``ready``; ``divisor`` clock cycles per bit."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        self.tx = Signal(init=1)
        self.data = Signal(8)
        self.start = Signal()
        self.ready = Signal()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shreg[0]), self.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.start):
                m.d.sync += [shreg.eq(Cat(0, self.data, 1)), bits.eq(10), timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1), timer.eq(self.divisor - 1)]
        return m


class UartLinear(Elaboratable):
    """The board's top level: UART pins (``rx``, ``tx``) <-> the command protocol <-> a :class:`LinearUnit`.

    ``led`` shows the unit busy (bit 0) and the last command's error (bit 1)."""

    def __init__(self, shape: TileShape, divisor: int):
        self.shape = shape
        self.divisor = divisor
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.led = Signal(2)

    def ports(self) -> list[Signal]:
        return [self.rx, self.tx, self.led]

    def elaborate(self, platform):
        m = Module()
        shape = self.shape
        R, C = shape.rows, shape.cols
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.submodules.unit = unit = LinearUnit(shape)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        n = Signal(range(shape.max_in + 1), init=1)
        m.d.comb += unit.n.eq(n)
        width = unit.data_bits
        sh = Signal(max(width, 16))                # bytes shift in at the top: a k-byte word is sh[-8k:]
        new_sh = Cat(sh[8:], urx.data)
        bytes_per = Signal(range(C * 4 + 1))
        bcount = Signal(range(C * 4 + 1))
        words = Signal(range(shape.max_in + 1))
        wcount = Signal(range(shape.max_in + 1))
        sel = Signal(2)

        # The reply: up to R*C*3 bytes; the first ``tx_left`` bytes of tx_sh go out, low byte first.
        reply_bytes = max(R * C * 3, 6)
        tx_sh = Signal(reply_bytes * 8)
        tx_left = Signal(range(reply_bytes + 1))
        with m.If((tx_left != 0) & utx.ready):
            m.d.comb += [utx.start.eq(1), utx.data.eq(tx_sh[:8])]
            m.d.sync += [tx_sh.eq(tx_sh >> 8), tx_left.eq(tx_left - 1)]

        def reply(m, value: bytes):
            m.d.sync += [tx_sh.eq(int.from_bytes(value, "little")), tx_left.eq(len(value))]

        def field_top(bits: int):
            return new_sh[len(new_sh) - bits:]

        m.d.comb += [unit.waddr.eq(wcount), unit.wsel.eq(sel)]
        n_value = field_top(16)
        n_ok = (n_value >= 1) & (n_value <= shape.max_in)
        with m.FSM():
            with m.State("CMD"):
                with m.If(urx.valid & (tx_left == 0)):
                    m.d.sync += [bcount.eq(0), wcount.eq(0)]
                    with m.Switch(urx.data):
                        with m.Case(ord("I")):
                            ident = b"EV" + bytes([R, C]) + shape.max_in.to_bytes(2, "little")
                            reply(m, ident)
                        with m.Case(ord("N")):
                            m.d.sync += [bytes_per.eq(2), words.eq(1), sel.eq(3)]
                            m.next = "LOAD"
                        with m.Case(ord("B")):
                            m.d.sync += [bytes_per.eq(C * BIAS.width // 8), words.eq(1), sel.eq(2)]
                            m.next = "LOAD"
                        with m.Case(ord("W")):
                            m.d.sync += [bytes_per.eq(C * WEIGHT.width // 8), words.eq(n), sel.eq(0)]
                            m.next = "LOAD"
                        with m.Case(ord("X")):
                            m.d.sync += [bytes_per.eq(R * ACT.width // 8), words.eq(n), sel.eq(1)]
                            m.next = "LOAD"
                        with m.Case(ord("R")):
                            m.d.comb += unit.start.eq(1)
                            m.next = "RUN"
                        with m.Default():
                            reply(m, b"?")
                            m.d.sync += self.led[1].eq(1)
            with m.State("LOAD"):
                with m.If(urx.valid):
                    m.d.sync += [sh.eq(new_sh), bcount.eq(bcount + 1)]
                    with m.If(bcount == bytes_per - 1):
                        m.d.sync += [bcount.eq(0), wcount.eq(wcount + 1)]
                        with m.Switch(sel):
                            with m.Case(0):
                                m.d.comb += [unit.we.eq(1), unit.wdata.eq(field_top(unit.w_bits))]
                            with m.Case(1):
                                m.d.comb += [unit.we.eq(1), unit.wdata.eq(field_top(unit.x_bits))]
                            with m.Case(2):
                                m.d.comb += [unit.we.eq(1), unit.wdata.eq(field_top(unit.b_bits))]
                            with m.Case(3):
                                m.d.sync += self.led[1].eq(~n_ok)
                                with m.If(n_ok):
                                    m.d.sync += n.eq(n_value)
                        with m.If(wcount == words - 1):
                            with m.If((sel == 3) & ~n_ok):
                                reply(m, b"?")
                            with m.Else():
                                reply(m, b"K")
                            m.next = "CMD"
            with m.State("RUN"):
                m.d.comb += self.led[0].eq(1)
                with m.If(unit.done):
                    m.d.sync += [tx_sh.eq(unit.y), tx_left.eq(R * C * 3)]
                    m.next = "CMD"
        return m
