"""MT throughput: 10,000 POST /v1/messages from 50 keep-alive clients through the real daemon.

Starts the SMSC simulator and the daemon (durable store, synchronous=FULL, receipts on) as
subprocesses on loopback, then prints accepted/s at the HTTP API, submit_sm/s at the
simulator, receipts applied, and the daemon's peak RSS. Not a test: figures only.

    .venv/bin/python bench/mt_throughput.py [--messages 10000] [--clients 50] [--persian]
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemon_harness import Daemon, Simulator, wait_for, write_config  # noqa: E402
from profiling import PyinstrumentDaemon, finish_profile, start_profile  # noqa: E402

KEY = "bench-key-" + "0" * 22


def write_bench_agency(directory):
    path = Path(directory) / "agencies.yaml"
    path.write_text(yaml.safe_dump({"agencies": [{
        "id": "bench", "name": "سازمان آزمون", "numbers": ["40409999"], "masks": ["BENCH"],
        "keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()],
        "rate_per_s": 1_000_000, "daily_parts": 100_000_000}]}, allow_unicode=True))
    return path


def write_bench_routing(directory):
    path = Path(directory) / "routing.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"prefixes": ["98"], "operator": "mci"}]}))
    return path


async def client(port, bodies, results):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\n"
                         b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            results[status] = results.get(status, 0) + 1
    finally:
        writer.close()


async def load(port, messages, clients, text, per_request):
    bodies = [json.dumps({"from": "40409999", "text": text,
                          "to": [f"0912{n:07d}" for n in range(first, first + per_request)]},
                         ensure_ascii=False).encode()
              for first in range(0, messages, per_request)]
    results = {}
    share = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(client(port, chunk, results) for chunk in share))
    return time.perf_counter() - started, results


def cpu_seconds(pid, part=None):
    """User + system CPU time a process has used so far; part "system": the kernel's
    share only."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if part == "system" else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid, part=None):
    """CPU seconds per thread (the daemon's reactor thread is the one named after the
    pid); part "user" or "system": only that share."""
    result = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = f"{(task / 'comm').read_text().strip()}[{task.name}]"
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        ticks = {"user": int(fields[11]), "system": int(fields[12])}.get(
            part, int(fields[11]) + int(fields[12]))
        seconds = ticks / os.sysconf("SC_CLK_TCK")
        result[name] = result.get(name, 0) + seconds
    return result


def commits(daemon):
    """(group commits so far, seconds spent in them): the store's commit histogram's
    count and sum; None if not served."""
    found = {}
    for line in daemon.scrape_metrics().splitlines():
        for field in ("count", "sum"):
            if line.startswith(f"payam_store_commit_seconds_{field}"):
                found[field] = float(line.split()[-1])
    return (found["count"], found["sum"]) if len(found) == 2 else None


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_name(slot):
    role, index = slot
    return f"http worker {index + 1}" if role == "http" else role


def set_workers(config, workers):
    """http.workers in the written configuration: "auto" or a number; None leaves it
    out, so that the benchmark measures the daemon's default."""
    settings = yaml.safe_load(Path(config).read_text())
    if workers is None:
        settings["http"].pop("workers", None)
    else:
        settings["http"]["workers"] = workers if workers == "auto" else int(workers)
    Path(config).write_text(yaml.safe_dump(settings))


def daemon_processes(daemon):
    """{name: pid} of the daemon's processes: the one process, or the supervisor, the
    dispatcher and each HTTP worker when it runs split."""
    found = daemon.processes()
    if len(found) == 1:
        return {"daemon (one process)": daemon.proc.pid}
    return {process_name(slot): pid for slot, pid in found.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=1,
                        help="recipients per request (the API takes up to 1000)")
    parser.add_argument("--persian", action="store_true", help="UCS2 text instead of GSM")
    parser.add_argument("--no-receipts", action="store_true",
                        help="ask for no delivery receipts (less work per message)")
    parser.add_argument("--profile", choices=("py-spy", "pyinstrument"),
                        help="profile the daemon during the load (bench/profiling.py)")
    parser.add_argument("--profile-out", default="bench/profiles")
    parser.add_argument("--workers", default=None,
                        help="http.workers: HTTP worker processes (0: one process; "
                             "default: the daemon's default)")
    args = parser.parse_args()
    text = ("پیام آزمایشی سامانه پیام دولت" if args.persian
            else "Payam Gateway benchmark message")

    sim = Simulator("--receipt-delay", "0.2")
    with tempfile.TemporaryDirectory() as tmp:
        config, http_port = write_config(tmp, sim.smpp_port, operators=("mci",),
                                         window=100, binds=2, tps=100_000,
                                         receipts=not args.no_receipts,
                                         agencies=write_bench_agency(tmp),
                                         routing=write_bench_routing(tmp))
        set_workers(config, args.workers)
        if args.profile == "pyinstrument":
            Path(args.profile_out).mkdir(parents=True, exist_ok=True)
            daemon = PyinstrumentDaemon(config, http_port, Path(args.profile_out)
                                        / "mt_throughput.pyinstrument.txt").start()
        else:
            daemon = Daemon(config, http_port).start()
        try:
            base = sim.stats()["submits"]
            processes = daemon_processes(daemon)
            # One py-spy per daemon process (the supervisor only waits).
            spies = [start_profile(args.profile, pid, args.profile_out,
                                   "mt_throughput" + ("" if len(processes) == 1 else
                                                      "." + name.replace(" ", "-")))
                     for name, pid in processes.items() if name != "supervisor"]
            one = processes.get("dispatcher", daemon.proc.pid)
            threads_before = thread_cpu_seconds(one)
            system_before = thread_cpu_seconds(one, "system")
            commits_before = commits(daemon)
            cpu_before = {"simulator": cpu_seconds(sim.proc.pid),
                          "load client": cpu_seconds(os.getpid()),
                          **{name: cpu_seconds(pid) for name, pid in processes.items()}}
            kernel_before = {name: cpu_seconds(pid, "system")
                             for name, pid in processes.items()}
            started = time.perf_counter()
            elapsed, results = asyncio.run(load(http_port, args.messages, args.clients, text,
                                                 args.recipients))
            accepted = results.get(202, 0) * args.recipients
            wait_for(lambda: sim.stats()["submits"] - base >= accepted, 120, interval=0.01,
                     what="all submit_sm at the SMSC")
            for spy in spies:
                finish_profile(spy)
            submit_elapsed = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name]
                   for name, pid in processes.items()}
            kernel = {name: cpu_seconds(pid, "system") - kernel_before[name]
                      for name, pid in processes.items()}
            cpu["daemon (all processes)"] = sum(cpu.values())
            cpu["simulator"] = cpu_seconds(sim.proc.pid) - cpu_before["simulator"]
            cpu["load client"] = cpu_seconds(os.getpid()) - cpu_before["load client"]
            threads_run = {name: seconds - threads_before.get(name, 0)
                           for name, seconds in thread_cpu_seconds(one).items()}
            system_run = {name: seconds - system_before.get(name, 0)
                          for name, seconds in thread_cpu_seconds(one, "system").items()}
            commits_after = commits(daemon)
            receipts = 0 if args.no_receipts else wait_for(
                lambda: sim.stats()["receipts"] >= accepted and sim.stats()["receipts"], 60,
                what="receipts sent")
            rss = {name: peak_rss_mb(pid) for name, pid in processes.items()}
            threads = thread_cpu_seconds(processes.get("dispatcher", daemon.proc.pid))
        finally:
            code = daemon.stop()
            sim.stop()

    print(f"messages: {args.messages}  clients: {args.clients}  "
          f"recipients/request: {args.recipients}  text: "
          f"{'UCS2' if args.persian else 'GSM'}  responses: {results}")
    print(f"accepted/s (HTTP 202, durable):  {accepted / elapsed:8.0f}")
    print(f"submit_sm/s at the simulator:    {accepted / submit_elapsed:8.0f}")
    print(f"receipts sent by the simulator:  {receipts}")
    print("CPU seconds during the run, per process:")
    for name, seconds in cpu.items():
        print(f"  {name:24s} {seconds:6.2f} s  {seconds * 1e6 / max(accepted, 1):5.0f} µs/msg"
              + (f" ({kernel[name] * 1e6 / max(accepted, 1):.0f} in the kernel)"
                 if name in kernel else ""))
    print("dispatcher's (or the one process's) threads' CPU seconds (whole life): "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in threads.items()))
    print("  its threads during the run: " + ", ".join(
        f"{name} {seconds * 1e6 / max(accepted, 1):.0f} µs/msg"
        f" ({system_run.get(name, 0) * 1e6 / max(accepted, 1):.0f} in the kernel)"
        for name, seconds in threads_run.items() if seconds > 0))
    if commits_before is not None and commits_after is not None:
        made = commits_after[0] - commits_before[0]
        spent = commits_after[1] - commits_before[1]
        print(f"group commits during the run: {made:.0f} "
              f"({accepted / max(made, 1):.1f} messages each, "
              f"{spent * 1e3 / max(made, 1):.2f} ms each from BEGIN to COMMIT)")
    print("peak RSS: " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in rss.items())
          + f"   (exit code {code})")
    # (A fixed Kannel figure went stale with every machine: compare in one run instead.)
    print("against Kannel in the same run: bench/vs_kannel.sh")


if __name__ == "__main__":
    main()
