"""Coverage-guided fuzzing of every parser, for a bounded time (not part of CI):
`python fuzz/run.py [SECONDS_PER_TARGET] [TARGET...]` (default 60 s, every target).

Each target runs under atheris (libFuzzer) in its own process, one at a time, with a
corpus in fuzz/corpus/TARGET (kept between runs, seeded from samples) and crash files
in fuzz/crashes/TARGET/. A crash ends a libFuzzer run; the target is started again
until its time is spent (at most MAX_CRASHES crashes each). Prints executions, corpus
size and crashes per target; exit 1 if any target crashed."""

import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import targets  # noqa: E402

MAX_CRASHES = 5
# Tokens that help the mutator past the first checks (libFuzzer -dict).
DICTS = {"messages_json": "json.dict", "broadcast_body": "json.dict", "http": "http.dict",
         "config_yaml": "yaml.dict", "ussd_menu": "yaml.dict"}
_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(rb"#(\d+)\s+(?:DONE|INITED|pulse|NEW|REDUCE)")


def seeds(name):
    """Sample inputs for a target (written into its corpus once)."""
    out = list(targets.SEEDS.get(name, ()))
    if name == "pdu":
        from gateway.smpp import constants as c
        from gateway.smpp.pdu import PDU, encode
        sm = PDU(c.SUBMIT_SM, 7, fields={"source_addr": "40401234",
                                         "destination_addr": "989121234567",
                                         "esm_class": 0x40, "data_coding": 8,
                                         "short_message": b"\x05\x00\x03\x01\x02\x01" +
                                         "سلام".encode("utf-16-be")})
        sm.set_tlv(c.TLV_USSD_SERVICE_OP, 1)
        sm.set_tlv(c.TLV_RECEIPTED_MESSAGE_ID, "1A2B")
        out += [encode(sm), encode(PDU(c.ENQUIRE_LINK, 1)),
                encode(PDU(c.SUBMIT_SM_RESP, 7, fields={"message_id": "ab12"})),
                encode(PDU(c.BIND_TRANSCEIVER, 1, fields={"system_id": "payam",
                                                          "password": "secret",
                                                          "interface_version": 0x34}))]
    elif name == "http":
        out += [b"\x05\x09\x30\x01GET /echo?a=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
                b"\x10\x03\x07\x20POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
                b"chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]
    elif name == "messages_json":
        out += ['{"from": "40401234", "to": ["09121234567", {"national_id": "0012345678"}],'
                ' "text": "سلام\\u200c", "priority": "high", "reference": "r",'
                ' "idempotency_key": "k", "validity_s": 3600, "receipt": false}'.encode()]
    elif name == "broadcast_body":
        out += [b"\x00\x05" + '{"from": "MALIAT", "text": "x", "to": ["0912", {"to":'
                ' "0935"}], "priority": "normal"}'.encode(),
                b"\x01\x03\"09121234567\"\n{\"to\": \"+989351234567\"}\n\n",
                b"\x02\x04to,name\n09121234567,a\n\"989351234567\",b\n"]
    elif name == "config_yaml":
        rules = sorted(glob.glob(os.path.join(targets.ROOT, "routing_rules", "*.yaml")))
        out += [b"\x02" + open(path, "rb").read() for path in rules[:1]]
    return out


def run(name, seconds):
    corpus = os.path.join(HERE, "corpus", name)
    crashes = os.path.join(HERE, "crashes", name)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    for index, data in enumerate(seeds(name)):
        path = os.path.join(corpus, f"seed-{index}")
        if not os.path.exists(path):
            with open(path, "wb") as file:
                file.write(data)
    before = set(os.listdir(crashes))
    executions, runs, deadline = 0, 0, time.monotonic() + seconds
    log_path = os.path.join(crashes, "last-run.log")
    while runs < MAX_CRASHES:
        left = int(deadline - time.monotonic())
        if left < 2:
            break
        runs += 1
        options = [f"-max_total_time={left}", "-timeout=10", "-rss_limit_mb=2048",
                   "-max_len=4096", "-print_final_stats=1", f"-artifact_prefix={crashes}/"]
        if name in DICTS:
            options.append(f"-dict={os.path.join(HERE, 'dicts', DICTS[name])}")
        with open(log_path, "wb") as log:
            code = subprocess.call(
                [sys.executable, os.path.join(HERE, "fuzz_one.py"), name, corpus, *options],
                stdout=log, stderr=subprocess.STDOUT)
        output = open(log_path, "rb").read()
        found = _EXECUTED.findall(output) or _DONE.findall(output)
        executions += int(found[-1]) if found else 0
        if code == 0:
            break
        kept = os.path.join(crashes, f"run-{int(time.time())}.log")
        os.replace(log_path, kept)
        print(f"  {name}: run {runs} stopped (exit {code}); log {kept}", flush=True)
    new = sorted(set(os.listdir(crashes)) - before - {"last-run.log"})
    found_files = [f for f in new if not f.endswith(".log")]
    return executions, len(os.listdir(corpus)), found_files


def main(argv):
    seconds = int(argv[1]) if len(argv) > 1 else 60
    names = argv[2:] or list(targets.TARGETS)
    rows, crashed = [], False
    for name in names:
        print(f"fuzzing {name} for {seconds} s ...", flush=True)
        started = time.monotonic()
        executions, corpus, found = run(name, seconds)
        rows.append((name, executions, corpus, found, time.monotonic() - started))
        crashed |= bool(found)
    print(f"\n{'target':<16}{'executions':>12}{'corpus':>8}{'seconds':>9}  crashes")
    for name, executions, corpus, found, spent in rows:
        print(f"{name:<16}{executions:>12,}{corpus:>8}{spent:>9.0f}  "
              f"{len(found)} {' '.join(found)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
