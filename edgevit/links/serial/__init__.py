"""The serial link to a board: frames (``frames``), messages (``messages``), the host client (``host``)
and the board-side agent (``agent``). The protocol is specified in docs/serial-protocol.md."""
from .frames import Damaged, Frame, FrameDecoder, encode
from .host import AgentError, SerialHost, UploadStats
from .messages import PROTOCOL_VERSION, ArtifactFormat, ErrorCode, Msg
from .port import PortError, open_port

__all__ = ["Damaged", "Frame", "FrameDecoder", "encode", "AgentError", "SerialHost", "UploadStats",
           "PROTOCOL_VERSION", "ArtifactFormat", "ErrorCode", "Msg", "PortError", "open_port"]
