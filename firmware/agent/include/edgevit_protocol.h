/* edgevit_protocol.h - the serial protocol's constants (docs/serial-protocol.md).
 * Generated from edgevit/serial_protocol.py by `python -m edgevit.firmware.protocol_header`: do not edit. */
#ifndef EDGEVIT_PROTOCOL_H
#define EDGEVIT_PROTOCOL_H

#define EV_PROTOCOL_VERSION 1u
#define EV_MIN_VERSION 1u

/* Frames (section 2) */
#define EV_SOF0 0xA5u
#define EV_SOF1 0x5Au
#define EV_HEADER_SIZE 10u      /* marker, version, type, seq, length, header CRC-16 */
#define EV_TRAILER_SIZE 4u     /* CRC-32 of header and payload */
#define EV_OVERHEAD 14u
#define EV_MAX_PAYLOAD_LIMIT 65535u
#define EV_MIN_MAX_PAYLOAD 256u
#define EV_HEARTBEAT_MS 1000u

/* CRC-16/IBM-3740 and CRC-32/ISO-HDLC (section 2.2) */
#define EV_CRC16_POLY 0x1021u
#define EV_CRC16_INIT 0xFFFFu
#define EV_CRC16_XOROUT 0x0000u
#define EV_CRC16_CHECK 0x29B1u
#define EV_CRC32_POLY_REFLECTED 0xEDB88320u
#define EV_CRC32_INIT 0xFFFFFFFFu
#define EV_CRC32_XOROUT 0xFFFFFFFFu
#define EV_CRC32_CHECK 0xCBF43926u

/* Msg */
enum {
    EV_MSG_HELLO = 0x01,
    EV_MSG_INFO = 0x02,
    EV_MSG_ACK = 0x03,
    EV_MSG_NAK = 0x04,
    EV_MSG_ERROR = 0x05,
    EV_MSG_PING = 0x06,
    EV_MSG_BYE = 0x07,
    EV_MSG_UPLOAD_BEGIN = 0x10,
    EV_MSG_UPLOAD_DATA = 0x11,
    EV_MSG_UPLOAD_END = 0x12,
    EV_MSG_RUN = 0x20,
    EV_MSG_BUSY = 0x21,
    EV_MSG_RESULT = 0x22,
    EV_MSG_READ = 0x30,
    EV_MSG_DATA = 0x31,
};

/* ErrorCode */
enum {
    EV_ERR_UNSUPPORTED_VERSION = 0x01,
    EV_ERR_UNKNOWN_TYPE = 0x02,
    EV_ERR_BAD_PAYLOAD = 0x03,
    EV_ERR_TOO_LARGE = 0x04,
    EV_ERR_BAD_OFFSET = 0x05,
    EV_ERR_HASH_MISMATCH = 0x06,
    EV_ERR_NOT_UPLOADED = 0x07,
    EV_ERR_UNSUPPORTED_FORMAT = 0x08,
    EV_ERR_RUN_FAILED = 0x09,
    EV_ERR_NO_RESULT = 0x0A,
    EV_ERR_BUSY = 0x0B,
    EV_ERR_STORAGE = 0x0C,
    EV_ERR_INTERNAL = 0x0D,
};

/* ArtifactFormat */
enum {
    EV_FORMAT_PTE = 0x01,
    EV_FORMAT_TFLITE = 0x02,
    EV_FORMAT_HLS = 0x03,
    EV_FORMAT_MCU = 0x04,
};

/* FileId */
enum {
    EV_FILE_ETDUMP = 0x01,
    EV_FILE_RESULT = 0x02,
    EV_FILE_OUTPUT = 0x03,
};

/* NakReason */
enum {
    EV_NAK_BAD_CRC = 0x01,
    EV_NAK_TOO_LONG = 0x02,
};

/* Artifact suffixes by format (INFO's "formats") */
#define EV_FORMAT_SUFFIX_PTE ".pte"
#define EV_FORMAT_SUFFIX_TFLITE ".tflite"
#define EV_FORMAT_SUFFIX_HLS ".bin"
#define EV_FORMAT_SUFFIX_MCU ".evm"

/* Payload layouts (little endian, no padding): size and field offsets (section 3) */
#define EV_HELLO_SIZE 4u  /* struct '<BBH' */
#define EV_HELLO_OFF_0 0u  /* uint8_t */
#define EV_HELLO_OFF_1 1u  /* uint8_t */
#define EV_HELLO_OFF_2 2u  /* uint16_t */
#define EV_HELLO_FIXED 1
#define EV_INFO_SIZE 4u  /* struct '<BxH' */
#define EV_INFO_OFF_0 0u  /* uint8_t */
#define EV_INFO_OFF_1 2u  /* uint16_t */
#define EV_INFO_FIXED 0
#define EV_ACK_SIZE 4u  /* struct '<I' */
#define EV_ACK_OFF_0 0u  /* uint32_t */
#define EV_ACK_FIXED 1
#define EV_NAK_SIZE 1u  /* struct '<B' */
#define EV_NAK_OFF_0 0u  /* uint8_t */
#define EV_NAK_FIXED 1
#define EV_ERROR_SIZE 2u  /* struct '<H' */
#define EV_ERROR_OFF_0 0u  /* uint16_t */
#define EV_ERROR_FIXED 0
#define EV_PING_SIZE 0u  /* struct '<' */
#define EV_PING_FIXED 1
#define EV_BYE_SIZE 0u  /* struct '<' */
#define EV_BYE_FIXED 1
#define EV_UPLOAD_BEGIN_SIZE 40u  /* struct '<IB3x32s' */
#define EV_UPLOAD_BEGIN_OFF_0 0u  /* uint32_t */
#define EV_UPLOAD_BEGIN_OFF_1 4u  /* uint8_t */
#define EV_UPLOAD_BEGIN_OFF_2 8u  /* u8[32] */
#define EV_UPLOAD_BEGIN_FIXED 1
#define EV_UPLOAD_DATA_SIZE 4u  /* struct '<I' */
#define EV_UPLOAD_DATA_OFF_0 0u  /* uint32_t */
#define EV_UPLOAD_DATA_FIXED 0
#define EV_UPLOAD_END_SIZE 0u  /* struct '<' */
#define EV_UPLOAD_END_FIXED 1
#define EV_RUN_SIZE 44u  /* struct '<IIH2x32s' */
#define EV_RUN_OFF_0 0u  /* uint32_t */
#define EV_RUN_OFF_1 4u  /* uint32_t */
#define EV_RUN_OFF_2 8u  /* uint16_t */
#define EV_RUN_OFF_3 12u  /* u8[32] */
#define EV_RUN_FIXED 1
#define EV_BUSY_SIZE 4u  /* struct '<I' */
#define EV_BUSY_OFF_0 0u  /* uint32_t */
#define EV_BUSY_FIXED 1
#define EV_RESULT_SIZE 0u  /* struct '<' */
#define EV_RESULT_FIXED 0
#define EV_READ_SIZE 8u  /* struct '<BxHI' */
#define EV_READ_OFF_0 0u  /* uint8_t */
#define EV_READ_OFF_1 2u  /* uint16_t */
#define EV_READ_OFF_2 4u  /* uint32_t */
#define EV_READ_FIXED 1
#define EV_DATA_SIZE 4u  /* struct '<I' */
#define EV_DATA_OFF_0 0u  /* uint32_t */
#define EV_DATA_FIXED 0

#endif /* EDGEVIT_PROTOCOL_H */
