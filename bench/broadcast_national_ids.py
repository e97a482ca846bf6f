"""Broadcast to national IDs: time to the 202 of N recipients given by national ID,
resolved through the embedded directory file (FileDirectory), against the same N given
as numbers.

Starts the SMSC simulator and the daemon (durable store) as subprocesses on loopback,
with a directory file of N invented citizens, posts one NDJSON broadcast of their
national IDs, then one of their numbers, and prints the seconds to each 202. Not a
test: figures only.

    .venv/bin/python bench/broadcast_national_ids.py [--recipients 100000]
"""

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from broadcast import key, write_agencies, write_routing  # noqa: E402
from daemon_harness import Daemon, Simulator, wait_for, write_config  # noqa: E402

from gateway.national_id import check_digit  # noqa: E402

TEXT = "شهروند گرامی، اطلاعیه جدیدی در سامانه ثبت شد."


def citizens(count):
    """[(national ID, number)]: distinct valid IDs, numbers 0912xxxxxxx."""
    out = []
    for n in range(count):
        first = f"{100_000_000 + n * 7:09d}"
        out.append((first + str(check_digit(first)), f"0912{n:07d}"))
    return out


def post(port, lines):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    query = urlencode({"from": "40401000", "text": TEXT})
    started = time.perf_counter()
    conn.putrequest("POST", "/v1/broadcasts?" + query)
    conn.putheader("Authorization", f"Bearer {key('crisis')}")
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for start in range(0, len(lines), 10_000):
        piece = "".join(lines[start:start + 10_000]).encode()
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    document = json.loads(response.read())
    elapsed = time.perf_counter() - started
    conn.close()
    assert response.status == 202, (response.status, document)
    return elapsed, document


class SlowStartDaemon(Daemon):
    """Reading a directory file of 100,000 citizens (YAML with lines kept for errors)
    takes longer than the harness's 30 s."""

    def start(self):
        import subprocess
        from daemon_harness import PYTHON, REPO
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gateway.cli", "run", "-c", str(self.config_path)],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 600, what="daemon /healthz")
        wait_for(self.all_bound, 30, what="every operator bound")
        return self


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()
    people = citizens(args.recipients)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "directory.yaml"
        directory.write_text(yaml.safe_dump(
            [{"national_id": nid, "msisdn": number} for nid, number in people]))
        sim = Simulator("--receipt-delay", "1.0")
        config, port = write_config(tmp, sim.smpp_port, operators=("mci",),
                                    agencies=write_agencies(tmp), routing=write_routing(tmp))
        settings = yaml.safe_load(config.read_text())
        settings["directory"] = {"path": str(directory)}
        config.write_text(yaml.safe_dump(settings))
        started = time.perf_counter()
        daemon = SlowStartDaemon(config, port).start()
        print(f"daemon up with {len(people):,} citizens in its directory in "
              f"{time.perf_counter() - started:.1f} s")
        try:
            by_id, document = post(port, [json.dumps({"national_id": nid}) + "\n"
                                          for nid, _ in people])
            assert document["recipients"] == len(people), document
            print(f"{len(people):,} national IDs: 202 after {by_id:.2f} s "
                  f"({len(people) / by_id:,.0f} recipients/s)")
            by_number, document = post(port, [f'"{number}"\n' for _, number in people])
            print(f"{len(people):,} numbers:      202 after {by_number:.2f} s "
                  f"({len(people) / by_number:,.0f} recipients/s)")
        finally:
            daemon.check_privacy = False       # a bench: the log is not the point
            daemon.stop()
            sim.stop()


if __name__ == "__main__":
    main()
