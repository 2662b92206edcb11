"""Opening a serial line (pyserial) with errors that say what to do."""
from __future__ import annotations

import errno

import serial

from ...errors import EdgevitError

__all__ = ["open_port", "PortError"]


class PortError(EdgevitError):
    """The serial port is missing, busy, not ours to open, or failed while in use."""


def open_port(port: str, baud: int, *, write_timeout: float = 5.0) -> serial.Serial:
    """Open ``port`` (a device path or a pyserial URL) raw, 8N1, exclusively (flock), 50 ms read timeout."""
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=0.05, write_timeout=write_timeout,
                                     exclusive=True)
    except ValueError as e:  # pyserial's check of the settings, e.g. a baud rate the driver refuses
        raise PortError(f"Cannot use serial port {port} at {baud} baud: {e}. Use a standard rate such as "
                        "115200 or 921600 (the same on both ends).") from None
    except serial.SerialException as e:
        code = e.errno
        if code == errno.ENOENT:
            raise PortError(f"Serial port {port} does not exist. Check that the cable or USB adapter is plugged "
                            "in and the name is right (ls /dev/ttyUSB* /dev/ttyACM* /dev/serial/by-id/).") from None
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            raise PortError(f"Serial port {port} is busy: another program holds it open (another edgevit, a "
                            f"serial console such as screen or minicom, ModemManager). Close it and try again; "
                            f"`fuser {port}` shows who holds it.") from None
        if code in (errno.EACCES, errno.EPERM):
            raise PortError(f"No permission to open serial port {port}. Add your user to the group that owns it "
                            "(usually dialout: sudo usermod -aG dialout $USER, then log in again).") from None
        raise PortError(f"Cannot open serial port {port}: {e}.") from None
