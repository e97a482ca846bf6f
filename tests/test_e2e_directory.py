"""The citizen directory in the real daemon (issue 12 item 2): both forms of gateway.yaml's
`directory:` start and stop cleanly, and no national ID of the directory file in use
reaches a log line or /metrics — also not when a reload refuses a broken file (the
harness checks every daemon's output for them at stop: daemon_harness.assert_private)."""

import shutil
import signal

import pytest
import yaml

from daemon_harness import (REPO, Daemon, Simulator, assert_private, directory_national_ids,
                            privacy_leaks, wait_for, write_config)

SAMPLE_IDS = {"0012345679", "1234567891", "0087654326", "4455667784"}


@pytest.fixture
def sim():
    simulator = Simulator()
    yield simulator
    simulator.stop()


def test_the_harness_finds_national_ids_in_every_form(tmp_path):
    ids = {"0012345679"}
    assert privacy_leaks("lookup for ********79 failed", national_ids=ids) == []
    assert len(privacy_leaks("a\nlookup 0012345679 failed\nb", national_ids=ids)) == 1
    assert len(privacy_leaks("کد ملی ۰۰۱۲۳۴۵۶۷۹", national_ids=ids)) == 1
    assert len(privacy_leaks('{"message": "\\u06f0\\u06f0\\u06f1\\u06f2\\u06f3\\u06f4'
                             '\\u06f5\\u06f6\\u06f7\\u06f9"}', national_ids=ids)) == 1
    with pytest.raises(AssertionError, match="national ID") as caught:
        assert_private("GET /citizens/0012345679", national_ids=ids)
    assert "0012345679" not in str(caught.value)          # the report hides it too
    config, _ = write_config(tmp_path, 2775, citizens={"path": "citizens/directory.yaml"})
    (tmp_path / "citizens").mkdir()
    shutil.copy(REPO / "config" / "directory.yaml", tmp_path / "citizens" / "directory.yaml")
    assert directory_national_ids(config) == SAMPLE_IDS
    config, _ = write_config(tmp_path, 2775, citizens={"url": "http://127.0.0.1:9"})
    assert directory_national_ids(config) == set()


def test_a_reload_refusing_a_broken_directory_file_names_lines_not_national_ids(
        tmp_path, sim):
    citizens = tmp_path / "directory.yaml"
    shutil.copy(REPO / "config" / "directory.yaml", citizens)
    config, http_port = write_config(tmp_path, sim.smpp_port,
                                     citizens={"path": "directory.yaml"})
    daemon = Daemon(config, http_port).start()
    try:
        assert SAMPLE_IDS <= daemon.national_ids          # the check is not vacuous
        broken = yaml.safe_load(citizens.read_text())
        broken.append(dict(broken[0]))                                  # listed twice
        broken.append({"national_id": "0087654320", "msisdn": "09121110000"})  # check digit
        broken.append({"national_id": "2223334445", "msisdn": "0935"})  # a bad number
        citizens.write_text(yaml.safe_dump(broken))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.output(), 10, what="refusal logged")
        output = daemon.output()
        assert "directory.yaml:" in output and "listed twice" in output
        assert "check digit" in output
    finally:
        assert daemon.stop() == 0                          # and assert_private at stop
    assert {"0087654320", "2223334445"} <= daemon.national_ids


def test_a_daemon_with_a_lookup_service_serves_its_metrics_and_stops_cleanly(tmp_path, sim):
    config, http_port = write_config(tmp_path, sim.smpp_port,
                                     citizens={"url": "http://127.0.0.1:9/shahkar",
                                               "timeout_s": 0.5})
    daemon = Daemon(config, http_port).start()
    try:
        metrics = daemon.scrape_metrics()
        for result in ("found", "unknown", "cached", "unavailable"):
            assert f'payam_directory_lookups_total{{result="{result}"}} 0.0' in metrics
        assert "payam_directory_lookup_seconds_count 0.0" in metrics
    finally:
        assert daemon.stop() == 0
