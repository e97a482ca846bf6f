"""SMPP 3.4 numbers: command ids, command_status codes, TLV tags and field values.

Plain ints, so the codec and the session compare and pack them without lookups.
Names follow the SMPP 3.4 specification; where SMPP 5.0 renamed a status (the TLV
errors 0xC0-0xC4) the 5.0 name is kept as an alias.
"""

# --- command ids ---------------------------------------------------------------------
RESPONSE_BIT = 0x80000000

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
QUERY_SM = 0x00000003
QUERY_SM_RESP = 0x80000003
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
REPLACE_SM = 0x00000007
REPLACE_SM_RESP = 0x80000007
CANCEL_SM = 0x00000008
CANCEL_SM_RESP = 0x80000008
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
SUBMIT_MULTI = 0x00000021
SUBMIT_MULTI_RESP = 0x80000021
ALERT_NOTIFICATION = 0x00000102
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103

COMMAND_NAMES = {
    GENERIC_NACK: "generic_nack",
    BIND_RECEIVER: "bind_receiver",
    BIND_RECEIVER_RESP: "bind_receiver_resp",
    BIND_TRANSMITTER: "bind_transmitter",
    BIND_TRANSMITTER_RESP: "bind_transmitter_resp",
    QUERY_SM: "query_sm",
    QUERY_SM_RESP: "query_sm_resp",
    SUBMIT_SM: "submit_sm",
    SUBMIT_SM_RESP: "submit_sm_resp",
    DELIVER_SM: "deliver_sm",
    DELIVER_SM_RESP: "deliver_sm_resp",
    UNBIND: "unbind",
    UNBIND_RESP: "unbind_resp",
    REPLACE_SM: "replace_sm",
    REPLACE_SM_RESP: "replace_sm_resp",
    CANCEL_SM: "cancel_sm",
    CANCEL_SM_RESP: "cancel_sm_resp",
    BIND_TRANSCEIVER: "bind_transceiver",
    BIND_TRANSCEIVER_RESP: "bind_transceiver_resp",
    OUTBIND: "outbind",
    ENQUIRE_LINK: "enquire_link",
    ENQUIRE_LINK_RESP: "enquire_link_resp",
    SUBMIT_MULTI: "submit_multi",
    SUBMIT_MULTI_RESP: "submit_multi_resp",
    ALERT_NOTIFICATION: "alert_notification",
    DATA_SM: "data_sm",
    DATA_SM_RESP: "data_sm_resp",
}

BIND_COMMANDS = frozenset({BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER})


def command_name(command_id):
    """'submit_sm', or 'unknown (0x00000abc)' for an id SMPP 3.4 does not define."""
    name = COMMAND_NAMES.get(command_id)
    return name if name is not None else f"unknown (0x{command_id:08X})"


# --- command_status ------------------------------------------------------------------
ESME_ROK = 0x00000000
ESME_RINVMSGLEN = 0x00000001        # message length is invalid
ESME_RINVCMDLEN = 0x00000002        # command length is invalid
ESME_RINVCMDID = 0x00000003         # invalid command id
ESME_RINVBNDSTS = 0x00000004        # incorrect bind status for the command
ESME_RALYBND = 0x00000005           # already bound
ESME_RINVPRTFLG = 0x00000006        # invalid priority flag
ESME_RINVREGDLVFLG = 0x00000007     # invalid registered delivery flag
ESME_RSYSERR = 0x00000008           # system error
ESME_RINVSRCADR = 0x0000000A        # invalid source address
ESME_RINVDSTADR = 0x0000000B        # invalid destination address
ESME_RINVMSGID = 0x0000000C         # message id is invalid
ESME_RBINDFAIL = 0x0000000D         # bind failed
ESME_RINVPASWD = 0x0000000E         # invalid password
ESME_RINVSYSID = 0x0000000F         # invalid system_id
ESME_RCANCELFAIL = 0x00000011       # cancel_sm failed
ESME_RREPLACEFAIL = 0x00000013      # replace_sm failed
ESME_RMSGQFUL = 0x00000014          # message queue full
ESME_RINVSERTYP = 0x00000015        # invalid service type
ESME_RINVNUMDESTS = 0x00000033      # invalid number of destinations
ESME_RINVDLNAME = 0x00000034        # invalid distribution list name
ESME_RINVDESTFLAG = 0x00000040      # invalid destination flag (submit_multi)
ESME_RINVSUBREP = 0x00000042        # invalid submit with replace request
ESME_RINVESMCLASS = 0x00000043      # invalid esm_class field data
ESME_RCNTSUBDL = 0x00000044         # cannot submit to distribution list
ESME_RSUBMITFAIL = 0x00000045       # submit_sm or submit_multi failed
ESME_RINVSRCTON = 0x00000048        # invalid source address TON
ESME_RINVSRCNPI = 0x00000049        # invalid source address NPI
ESME_RINVDSTTON = 0x00000050        # invalid destination address TON
ESME_RINVDSTNPI = 0x00000051        # invalid destination address NPI
ESME_RINVSYSTYP = 0x00000053        # invalid system_type field
ESME_RINVREPFLAG = 0x00000054       # invalid replace_if_present flag
ESME_RINVNUMMSGS = 0x00000055       # invalid number of messages
ESME_RTHROTTLED = 0x00000058        # throttling error: exceeded allowed message limits
ESME_RINVSCHED = 0x00000061         # invalid scheduled delivery time
ESME_RINVEXPIRY = 0x00000062        # invalid message validity period
ESME_RINVDFTMSGID = 0x00000063      # predefined message invalid or not found
ESME_RX_T_APPN = 0x00000064         # receiver temporary app error code
ESME_RX_P_APPN = 0x00000065         # receiver permanent app error code
ESME_RX_R_APPN = 0x00000066         # receiver reject message error code
ESME_RQUERYFAIL = 0x00000067        # query_sm request failed
ESME_RINVOPTPARSTREAM = 0x000000C0  # error in the optional part of the PDU body
ESME_ROPTPARNOTALLWD = 0x000000C1   # optional parameter not allowed
ESME_RINVPARLEN = 0x000000C2        # invalid parameter length
ESME_RMISSINGOPTPARAM = 0x000000C3  # expected optional parameter missing
ESME_RINVOPTPARAMVAL = 0x000000C4   # invalid optional parameter value
ESME_RDELIVERYFAILURE = 0x000000FE  # delivery failure (data_sm_resp)
ESME_RUNKNOWNERR = 0x000000FF       # unknown error

# SMPP 5.0 names for the same TLV errors.
ESME_RINVTLVSTREAM = ESME_RINVOPTPARSTREAM
ESME_RTLVNOTALLWD = ESME_ROPTPARNOTALLWD
ESME_RINVTLVLEN = ESME_RINVPARLEN
ESME_RMISSINGTLV = ESME_RMISSINGOPTPARAM
ESME_RINVTLVVAL = ESME_RINVOPTPARAMVAL

# 0x400-0x4FF are reserved for SMSC vendor-specific errors.
VENDOR_STATUS_MIN = 0x00000400
VENDOR_STATUS_MAX = 0x000004FF

STATUS_NAMES = {
    code: name for name, code in globals().items()
    if name.startswith("ESME_R") and name not in {
        "ESME_RINVTLVSTREAM", "ESME_RTLVNOTALLWD", "ESME_RINVTLVLEN",
        "ESME_RMISSINGTLV", "ESME_RINVTLVVAL"}
}


def status_name(code):
    """'ESME_RTHROTTLED (0x00000058)': the name and the code, for logs and errors."""
    name = STATUS_NAMES.get(code)
    if name is None:
        if VENDOR_STATUS_MIN <= code <= VENDOR_STATUS_MAX:
            name = "vendor-specific"
        else:
            name = "unknown status"
    return f"{name} (0x{code:08X})"


# --- TLV tags (SMPP 3.4 section 5.3.2) --------------------------------------------------
TLV_DEST_ADDR_SUBUNIT = 0x0005
TLV_DEST_NETWORK_TYPE = 0x0006
TLV_DEST_BEARER_TYPE = 0x0007
TLV_DEST_TELEMATICS_ID = 0x0008
TLV_SOURCE_ADDR_SUBUNIT = 0x000D
TLV_SOURCE_NETWORK_TYPE = 0x000E
TLV_SOURCE_BEARER_TYPE = 0x000F
TLV_SOURCE_TELEMATICS_ID = 0x0010
TLV_QOS_TIME_TO_LIVE = 0x0017
TLV_PAYLOAD_TYPE = 0x0019
TLV_ADDITIONAL_STATUS_INFO_TEXT = 0x001D
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MS_MSG_WAIT_FACILITIES = 0x0030
TLV_PRIVACY_INDICATOR = 0x0201
TLV_SOURCE_SUBADDRESS = 0x0202
TLV_DEST_SUBADDRESS = 0x0203
TLV_USER_MESSAGE_REFERENCE = 0x0204
TLV_USER_RESPONSE_CODE = 0x0205
TLV_SOURCE_PORT = 0x020A
TLV_DESTINATION_PORT = 0x020B
TLV_DEST_PORT = TLV_DESTINATION_PORT
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_LANGUAGE_INDICATOR = 0x020D
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
TLV_SC_INTERFACE_VERSION = 0x0210
TLV_CALLBACK_NUM_PRES_IND = 0x0302
TLV_CALLBACK_NUM_ATAG = 0x0303
TLV_NUMBER_OF_MESSAGES = 0x0304
TLV_CALLBACK_NUM = 0x0381
TLV_DPF_RESULT = 0x0420
TLV_SET_DPF = 0x0421
TLV_MS_AVAILABILITY_STATUS = 0x0422
TLV_NETWORK_ERROR_CODE = 0x0423
TLV_MESSAGE_PAYLOAD = 0x0424
TLV_DELIVERY_FAILURE_REASON = 0x0425
TLV_MORE_MESSAGES_TO_SEND = 0x0426
TLV_MESSAGE_STATE = 0x0427
TLV_USSD_SERVICE_OP = 0x0501
TLV_DISPLAY_TIME = 0x1201
TLV_SMS_SIGNAL = 0x1203
TLV_MS_VALIDITY = 0x1204
TLV_ALERT_ON_MESSAGE_DELIVERY = 0x130C
TLV_ITS_REPLY_TYPE = 0x1380
TLV_ITS_SESSION_INFO = 0x1383

TLV_NAMES = {
    code: name[4:].lower() for name, code in globals().items()
    if name.startswith("TLV_") and name != "TLV_DEST_PORT"
}


def tlv_name(tag):
    """'ussd_service_op', or '0x1402' for a tag SMPP 3.4 does not define."""
    name = TLV_NAMES.get(tag)
    return name if name is not None else f"0x{tag:04X}"


# --- field values ----------------------------------------------------------------------
INTERFACE_VERSION_34 = 0x34

# esm_class: bits 5-2 message type (deliver_sm), bits 7-6 GSM features.
ESM_CLASS_MESSAGE_TYPE_MASK = 0x3C
ESM_CLASS_DELIVERY_RECEIPT = 0x04           # SMSC delivery receipt
ESM_CLASS_SME_DELIVERY_ACK = 0x08           # SME delivery acknowledgement
ESM_CLASS_SME_USER_ACK = 0x10               # SME manual/user acknowledgement
ESM_CLASS_CONVERSATION_ABORT = 0x18
ESM_CLASS_INTERMEDIATE_NOTIFICATION = 0x20  # intermediate delivery notification
ESM_CLASS_UDHI = 0x40                       # short_message starts with a UDH
ESM_CLASS_REPLY_PATH = 0x80

# data_coding
DATA_CODING_DEFAULT = 0x00      # SMSC default alphabet (GSM 03.38 here)
DATA_CODING_IA5 = 0x01
DATA_CODING_BINARY_2 = 0x02
DATA_CODING_LATIN1 = 0x03
DATA_CODING_BINARY = 0x04
DATA_CODING_UCS2 = 0x08
DATA_CODING_USSD_GSM = 0x0F     # USSD: GSM 7-bit, language unspecified

# registered_delivery bits 1-0: SMSC delivery receipt wanted
REGISTERED_DELIVERY_NONE = 0x00
REGISTERED_DELIVERY_RECEIPT = 0x01          # on success or failure
REGISTERED_DELIVERY_RECEIPT_ON_FAILURE = 0x02
REGISTERED_DELIVERY_INTERMEDIATE = 0x10

# TON / NPI
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK_SPECIFIC = 3
TON_SUBSCRIBER = 4
TON_ALPHANUMERIC = 5
TON_ABBREVIATED = 6
NPI_UNKNOWN = 0
NPI_ISDN = 1

# message_state TLV values
MESSAGE_STATE_ENROUTE = 1
MESSAGE_STATE_DELIVERED = 2
MESSAGE_STATE_EXPIRED = 3
MESSAGE_STATE_DELETED = 4
MESSAGE_STATE_UNDELIVERABLE = 5
MESSAGE_STATE_ACCEPTED = 6
MESSAGE_STATE_UNKNOWN = 7
MESSAGE_STATE_REJECTED = 8

# ussd_service_op TLV values
USSD_PSSD_INDICATION = 0
USSD_PSSR_INDICATION = 1
USSD_USSR_REQUEST = 2
USSD_USSN_REQUEST = 3
USSD_PSSD_RESPONSE = 16
USSD_PSSR_RESPONSE = 17
USSD_USSR_CONFIRM = 18
USSD_USSN_CONFIRM = 19
