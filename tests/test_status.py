"""command_status names and what to do with each."""

import pytest

from gateway.smpp import constants as c
from gateway.smpp.status import ALERT_STATUSES, classify_status, needs_alert

# The table of /work/shared/README.md, "command_status — what to do".
TABLE = [
    (0x00, "ok"),
    (0x58, "throttled"), (0x14, "throttled"),
    (0x08, "temporary"), (0x45, "temporary"), (0x64, "temporary"),
    (0xFE, "temporary"), (0xFF, "temporary"),
    (0x04, "rebind"), (0x05, "rebind"),
    (0x0A, "permanent"), (0x48, "permanent"), (0x49, "permanent"),
    (0x0B, "permanent"), (0x50, "permanent"), (0x51, "permanent"),
    (0x01, "permanent"), (0x43, "permanent"), (0x61, "permanent"), (0x62, "permanent"),
    (0xC0, "permanent"), (0xC1, "permanent"), (0xC2, "permanent"), (0xC3, "permanent"),
    (0xC4, "permanent"),
    (0x65, "permanent"), (0x66, "permanent"),
    (0x0D, "bind_error"), (0x0E, "bind_error"), (0x0F, "bind_error"),
]


@pytest.mark.parametrize("code, kind", TABLE, ids=[f"0x{code:02X}" for code, _ in TABLE])
def test_table(code, kind):
    assert classify_status(code) == kind


@pytest.mark.parametrize("code", [0x0A, 0x48, 0x49, 0x01, 0x43, 0x61, 0x62,
                                  0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0x0D, 0x0E, 0x0F])
def test_our_configuration_or_bug_raises_an_alert(code):
    assert needs_alert(code) and code in ALERT_STATUSES


@pytest.mark.parametrize("code", [0x00, 0x58, 0x14, 0x08, 0x0B, 0x50, 0x51, 0x65, 0x66,
                                  0xFF, 0x04])
def test_the_citizen_or_the_network_is_no_alert(code):
    assert not needs_alert(code)


@pytest.mark.parametrize("code", [0x400, 0x4FF, 0x09, 0x99, 0x1234])
def test_vendor_and_undefined_codes_are_retried(code):
    assert classify_status(code) == "temporary"


def test_every_named_status_has_a_class():
    kinds = {classify_status(code) for code in c.STATUS_NAMES}
    assert kinds == {"ok", "throttled", "temporary", "rebind", "permanent", "bind_error"}
    assert ALERT_STATUSES <= set(c.STATUS_NAMES)


@pytest.mark.parametrize("bad", [-1, 1 << 32, "0x58", None, True])
def test_classify_rejects_non_codes(bad):
    with pytest.raises(ValueError):
        classify_status(bad)


def test_status_name():
    assert c.status_name(c.ESME_RTHROTTLED) == "ESME_RTHROTTLED (0x00000058)"
    assert c.status_name(0) == "ESME_ROK (0x00000000)"
    assert c.status_name(0xC0) == "ESME_RINVOPTPARSTREAM (0x000000C0)"
    assert c.status_name(0x401) == "vendor-specific (0x00000401)"
    assert c.status_name(0x99) == "unknown status (0x00000099)"


def test_status_names_are_the_constants():
    for code, name in c.STATUS_NAMES.items():
        assert getattr(c, name) == code
    assert len(c.STATUS_NAMES) == len(set(c.STATUS_NAMES.values()))


def test_command_names_and_response_ids():
    for command_id, name in c.COMMAND_NAMES.items():
        assert getattr(c, name.upper()) == command_id
        if command_id != c.GENERIC_NACK and not command_id & c.RESPONSE_BIT:
            response = c.COMMAND_NAMES.get(command_id | c.RESPONSE_BIT)
            assert response in (None, name + "_resp")
    assert c.command_name(0x99) == "unknown (0x00000099)"


def test_tlv_names():
    assert c.tlv_name(c.TLV_USSD_SERVICE_OP) == "ussd_service_op"
    assert c.tlv_name(0x1383) == "its_session_info"
    assert c.tlv_name(0x1402) == "0x1402"
    for tag, name in c.TLV_NAMES.items():
        assert getattr(c, "TLV_" + name.upper()) == tag


def test_metric_labels_are_bounded():
    from gateway.smpp.status import status_label
    assert status_label(c.ESME_RTHROTTLED) == "ESME_RTHROTTLED (0x00000058)"
    assert {status_label(code) for code in range(0x1000, 0x1000 + 1000)} == {"other"}
    assert status_label(0x400) == "other"                 # vendor range: one series too
