"""Message text: GSM 03.38 / UCS2 choice, splitting with UDH, inbound decoding."""

from gateway.text.decode import (
    ConcatInfo,
    DecodedText,
    codec_for,
    decode_payload,
    decode_short_message,
    parse_udh,
    split_udh,
    udh_length,
)
from gateway.text.encode import (
    DATA_CODING_GSM,
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    MAX_PARTS,
    EncodedMessage,
    TextTooLong,
    count_parts,
    encode_for_submit,
    encode_message,
    encode_text,
    measure,
    utf16_units,
)
from gateway.text.gsm import gsm_decode, gsm_encode, gsm_length, is_gsm, try_gsm_encode

__all__ = [
    "ConcatInfo", "DecodedText", "codec_for", "decode_payload", "decode_short_message",
    "parse_udh", "split_udh", "udh_length",
    "DATA_CODING_GSM", "DATA_CODING_UCS2", "ESM_CLASS_UDHI", "MAX_PARTS", "EncodedMessage",
    "TextTooLong", "count_parts", "encode_for_submit", "encode_message", "encode_text",
    "measure", "utf16_units",
    "gsm_decode", "gsm_encode", "gsm_length", "is_gsm", "try_gsm_encode",
]
