"""End to end, the daemon split across processes (`http: {workers: 2}`): a supervisor,
one dispatcher process holding the binds, two HTTP workers on one socket."""

import hashlib
import http.client
import json
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from daemon_harness import KEYS, REPO, Daemon, Simulator, http_json, wait_for, write_config

TAX = KEYS["tax"]
QUOTA_KEY = "procs-quota-key-000000000000000"
NEW_KEY = "procs-new-agency-key-00000000000"
SMALL_KEY = "procs-small-quota-key-0000000000"
BULK_KEY = "procs-bulk-agency-key-0000000000"
PACED_KEY = "procs-paced-agency-key-000000000"
PACED_RATE = 10


def children(daemon):
    """{(role, index): pid} of the supervisor's children."""
    return {slot: pid for slot, pid in daemon.processes().items() if slot[0] != "supervisor"}


def agency(agency_id, key, number, **limits):
    return {"id": agency_id, "name": agency_id, "numbers": [number],
            "keys": ["sha256:" + hashlib.sha256(key.encode()).hexdigest()],
            "rate_per_s": limits.get("rate_per_s", 10000),
            "daily_parts": limits.get("daily_parts", 1000000)}


def split_config(tmp_path, sim, workers=2):
    agencies = tmp_path / "agencies.yaml"
    document = yaml.safe_load((REPO / "config" / "agencies.yaml").read_text())
    document["agencies"].append(agency("quota", QUOTA_KEY, "40409991", daily_parts=100))
    document["agencies"].append(agency("small", SMALL_KEY, "40409993", daily_parts=20))
    document["agencies"].append(agency("bulk", BULK_KEY, "40409994"))
    document["agencies"].append(agency("paced", PACED_KEY, "40409995",
                                       rate_per_s=PACED_RATE))
    agencies.write_text(yaml.safe_dump(document, allow_unicode=True))
    path, port = write_config(tmp_path, sim.smpp_port, agencies=agencies, window=50)
    config = yaml.safe_load(path.read_text())
    config["http"]["workers"] = workers
    path.write_text(yaml.safe_dump(config))
    return path, port, agencies


def message(sender, text):
    return {"from": sender, "to": "09121234567", "text": text}


def send(daemon, key, sender, text, **extra):
    return daemon.send(key, **{"from": sender, "to": "09121234567", "text": text, **extra})


def through_each_worker(daemon, request):
    """request(ask) answered by each HTTP worker in turn, ask(method, path, body, key)
    → (status, body) on one keep-alive connection that worker took: the connection is
    made while the other workers are stopped (SIGSTOP), so the kernel hands it to that
    one, and they go on (SIGCONT) as soon as it has answered a first GET /healthz
    (no stopped worker is left holding the store's write lock for long)."""
    workers = {slot: pid for slot, pid in children(daemon).items() if slot[0] == "http"}
    answers = {}
    for slot in workers:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
        others = [pid for other, pid in workers.items() if other != slot]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

        def ask(method, path, body=None, key=None):
            daemon.texts.add((body or {}).get("text"))    # (its privacy check)
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            conn.request(method, path, body=json.dumps(body).encode(), headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        try:
            answers[slot] = request(ask)
        finally:
            conn.close()
    return answers


@pytest.fixture
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


def test_two_workers_accept_sighup_reloads_all_a_killed_worker_comes_back(tmp_path, sim):
    path, port, agencies = split_config(tmp_path, sim)
    daemon = Daemon(path, port).start()
    try:
        slots = children(daemon)
        assert set(slots) == {("dispatcher", 0), ("http", 0), ("http", 1)}, slots

        # Accepted by each worker, each message lands once and is sent once.
        ids = []
        for round_ in range(3):
            answers = through_each_worker(daemon, lambda ask: ask(
                "POST", "/v1/messages", message("40401234", f"split round {round_} ok"), TAX))
            for code, body in answers.values():
                assert code == 202, body
                ids.append(body["messages"][0]["id"])
        for message_id in ids:
            daemon.wait_status(TAX, message_id, "delivered")
        assert len(ids) == 6 and len(sim.submits()) == 6
        assert "wake-up failed" not in daemon.output()         # woken over the pipe

        # SIGHUP: an agency added to the file is accepted by every worker.
        document = yaml.safe_load(agencies.read_text())
        document["agencies"].append(agency("newcomer", NEW_KEY, "40409992"))
        agencies.write_text(yaml.safe_dump(document, allow_unicode=True))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.output().count("reloaded") >= 3, 20, what="3 reloads")
        answers = through_each_worker(daemon, lambda ask: ask(
            "POST", "/v1/messages", message("40409992", "from the newcomer agency"), NEW_KEY))
        assert [code for code, _ in answers.values()] == [202, 202], answers
        # A broken file is refused by every process; each keeps what it had.
        good = agencies.read_text()
        agencies.write_text("agencies:\n  - id: BROKEN ID\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.output().count("reload refused") >= 3, 20,
                 what="3 refusals")
        answers = through_each_worker(daemon, lambda ask: ask(
            "POST", "/v1/messages", message("40409992", "after a refused reload"), NEW_KEY))
        assert [code for code, _ in answers.values()] == [202, 202], answers
        agencies.write_text(good)

        # `payam-gateway reload` (the dispatcher's admin endpoint) reloads the workers too.
        admin = int(yaml.safe_load(path.read_text())["admin"]["listen"].rsplit(":", 1)[1])
        code, answer, _ = http_json(admin, "POST", "/reload")
        assert (code, answer["reloaded"]) == (200, True), answer
        wait_for(lambda: daemon.output().count("reloaded") >= 6, 20, what="3 more reloads")

        # A worker killed is started again; the daemon serves throughout.
        killed = slots[("http", 1)]
        os.kill(killed, signal.SIGKILL)
        code, body, _ = send(daemon, TAX, "40401234", "while a worker restarts")
        assert code == 202, body
        wait_for(lambda: children(daemon).get(("http", 1)) not in (None, killed), 20,
                 what="the worker restarted")
        wait_for(lambda: "the http worker 2 is ready" in daemon.output().split(
            "http worker 2 ended")[-1], 20, what="the new worker ready")
        answers = through_each_worker(daemon, lambda ask: ask(
            "POST", "/v1/messages", message("40401234", "after the restart"), TAX))
        assert [code for code, _ in answers.values()] == [202, 202], answers
        assert daemon.health()["status"] == "ok"

        # /metrics: one scrape shows every process's CPU and memory.
        scraped = daemon.scrape_metrics()
        for role, index in (("supervisor", 0), ("dispatcher", 0), ("http", 0), ("http", 1)):
            assert f'payam_process_resident_bytes{{index="{index}",role="{role}"}}' \
                in scraped, role
        assert "payam_messages_accepted_total" in scraped
    finally:
        assert daemon.stop() == 0


def test_quota_across_two_workers_is_never_overshot(tmp_path, sim):
    """Quota 100 parts, 150 concurrent single-part requests over two workers: exactly
    100 accepted, 50 refused as over quota."""
    path, port, _ = split_config(tmp_path, sim)
    daemon = Daemon(path, port).start()
    try:
        def one(i):
            return http_json(port, "POST", "/v1/messages",
                             {"from": "40409991", "to": "09121234567",
                              "text": f"quota check {i}"}, key=QUOTA_KEY)[:2]
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(one, range(150)))
        codes = [code for code, _ in answers]
        assert codes.count(202) == 100, sorted(set(codes))
        refused = [body for code, body in answers if code != 202]
        assert all(body["error"]["code"] == "quota_exceeded" for body in refused), refused[:3]

        # Quota 20: 10 parts through each worker (each one counts 10 of its own), then
        # a broadcast either worker would let through alone is refused by the store.
        def ten(ask):
            return [ask("POST", "/v1/messages", message("40409993", "ten"), SMALL_KEY)[0]
                    for _ in range(10)]
        assert list(through_each_worker(daemon, ten).values()) == [[202] * 10] * 2

        def broadcast(ask):
            return ask("POST", "/v1/broadcasts",
                       {"from": "40409993", "text": "a broadcast too many",
                        "to": [f"0912000{n:04d}" for n in range(5)]}, SMALL_KEY)
        for code, body in through_each_worker(daemon, broadcast).values():
            assert (code, body["error"]["code"]) == (429, "quota_exceeded"), body
    finally:
        assert daemon.stop() == 0


def test_an_agencys_rate_is_shared_between_the_workers_not_given_to_each(tmp_path, sim):
    """Each of N workers spends rate_per_s / N (and saves up one second of it): two
    workers together never let more through than the agency's one rate allows."""
    path, port, _ = split_config(tmp_path, sim)
    daemon = Daemon(path, port).start()
    try:
        share = PACED_RATE / 2

        def burst(ask):
            started = time.monotonic()
            codes = [ask("POST", "/v1/messages", message("40409995", f"paced {i}"),
                         PACED_KEY)[0] for i in range(20)]
            return codes, time.monotonic() - started
        answers = through_each_worker(daemon, burst)
        assert len(answers) == 2
        for codes, seconds in answers.values():
            assert set(codes) <= {202, 429}, codes
            # A full bucket of one second at this worker's share, plus what it refills.
            assert share <= codes.count(202) <= share + share * seconds + 1, (codes, seconds)
    finally:
        assert daemon.stop() == 0


def test_sigterm_stops_every_process_cleanly_and_loses_nothing(tmp_path, sim):
    path, port, _ = split_config(tmp_path, sim)
    sim.behave(ack_delay_s=0.3)
    daemon = Daemon(path, port).start()
    texts = [f"stop test message {i}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: send(daemon, TAX, "40401234", t), texts))
    ids = [body["messages"][0]["id"] for code, body, _ in answers if code == 202]
    assert len(ids) == 40
    pids = children(daemon)
    assert daemon.stop() == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids.values())
    output = daemon.output()
    assert "stopped cleanly" in output.rsplit("stopping: HTTP workers first", 1)[1]
    with sqlite3.connect(daemon.db_path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    assert set(ids) <= stored
    # Started again, what was not sent yet goes out, each message once.
    sim.behave(ack_delay_s=0)
    daemon = Daemon(path, port).start()
    try:
        for message_id in ids:
            daemon.wait_status(TAX, message_id, "delivered", timeout=30)
        sent = [s for s in sim.submits()]
        assert len(sent) == 40, len(sent)
    finally:
        assert daemon.stop() == 0


def test_a_dispatcher_killed_mid_accept_never_leaves_a_202_unstored(tmp_path, sim):
    """The workers' accepts are committed by the dispatcher process's writer
    (store/remote_writer.py).  SIGKILLed while accepts stream in: every 202 answered is
    a stored message (before, during and after its restart): those it took with it are
    answered from the store (committed: 202; not: 503), those while it is away are
    committed by the workers; once it is back they hand it their accepts again."""
    path, port, _ = split_config(tmp_path, sim)
    daemon = Daemon(path, port).start()
    try:
        wait_for(lambda: daemon.output().count("accepts go to the dispatcher") >= 2, 20,
                 what="both workers linked to the dispatcher's writer")
        dispatcher = children(daemon)[("dispatcher", 0)]
        answers = []

        def one(i):
            if i == 150:
                os.kill(dispatcher, signal.SIGKILL)
            code, body, _ = send(daemon, BULK_KEY, "40409994", f"kill test message {i}")
            return code, body
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(400)))
        codes = [code for code, _ in answers]
        assert set(codes) <= {202, 503}, sorted(set(codes))
        assert codes.count(202) >= 200, codes.count(202)
        wait_for(lambda: children(daemon).get(("dispatcher", 0)) not in (None, dispatcher),
                 20, what="the dispatcher restarted")
        wait_for(lambda: daemon.output().count("accepts go to the dispatcher") >= 4, 20,
                 what="both workers linked again")
        code, body, _ = send(daemon, BULK_KEY, "40409994", "after the dispatcher came back")
        assert code == 202, body
        accepted = [body["messages"][0]["id"] for code, body in answers if code == 202]
        accepted.append(body["messages"][0]["id"])
        assert "the dispatcher's writer is away" in daemon.output()
    finally:
        assert daemon.stop() == 0
    with sqlite3.connect(daemon.db_path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    assert set(accepted) <= stored


def test_two_workers_racing_one_idempotency_key_store_one_message(tmp_path, sim):
    """The same idempotency_key sent 16 times at once over both workers (their accepts
    committed by the dispatcher's writer): one message stored, every answer its id."""
    path, port, _ = split_config(tmp_path, sim)
    daemon = Daemon(path, port).start()
    try:
        wait_for(lambda: daemon.output().count("accepts go to the dispatcher") >= 2, 20,
                 what="both workers linked to the dispatcher's writer")

        def one(_):
            return send(daemon, BULK_KEY, "40409994", "raced idempotency key",
                        idempotency_key="raced-key-1")[:2]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(16)))
        assert {code for code, _ in answers} <= {200, 202}, answers
        ids = {body["messages"][0]["id"] for _, body in answers}
        assert len(ids) == 1, answers
    finally:
        assert daemon.stop() == 0
    with sqlite3.connect(daemon.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE agency = 'bulk'"
                          ).fetchone()[0] == 1


def test_a_hung_dispatcher_makes_the_workers_healthz_degraded_not_ok(tmp_path, sim):
    """Only the dispatcher knows the binds; a worker reads its word from a file. Once
    that word is old (the dispatcher stopped, here by SIGSTOP), /healthz says degraded
    rather than repeat the last good state; it is ok again once the dispatcher runs."""
    path, port, _ = split_config(tmp_path, sim, workers=1)
    daemon = Daemon(path, port).start()
    try:
        def status():
            return http_json(daemon.http_port, "GET", "/healthz")[1]["status"]
        wait_for(lambda: status() == "ok", 20, what="the binds up")
        dispatcher = children(daemon)[("dispatcher", 0)]
        os.kill(dispatcher, signal.SIGSTOP)
        try:
            wait_for(lambda: status() != "ok", 15, interval=0.5,
                     what="/healthz to stop saying ok")
            assert status() == "degraded"
        finally:
            os.kill(dispatcher, signal.SIGCONT)
        wait_for(lambda: status() == "ok", 20, what="ok again")
    finally:
        assert daemon.stop() == 0
