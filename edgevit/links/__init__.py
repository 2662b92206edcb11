"""How edgevit reaches a device: the real ``adb`` client (``adb.py``) and a serial line (``serial/``: the
framed protocol of docs/serial-protocol.md, its host end and the board-side agent). A JTAG cable is the next
link. What runs over a link is ``edgevit.profiling.via``; what a device is, ``edgevit.devices``.
"""
