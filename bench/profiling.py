"""Profiling the benchmarked daemon: py-spy attached to it, or the daemon run under
pyinstrument (both from PyPI into .venv only, never test dependencies:
`.venv/bin/pip install py-spy pyinstrument`).

The benchmarks take `--profile py-spy|pyinstrument` and `--profile-out DIR`; py-spy's
samples (every thread, idle ones left out) are summed here into the top functions by
self and by cumulative time, as in bench/PROFILE.md.
"""

import collections
import re
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import daemon_harness  # noqa: E402
from daemon_harness import Daemon, wait_for  # noqa: E402

BIN = Path(sys.executable).parent
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class PySpy:
    """py-spy record attached to a running process until stop(); raw (collapsed) stacks."""

    def __init__(self, pid, out, rate=250):
        self.out = Path(out)
        self.proc = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", str(rate),
             "--format", "raw", "--threads", "--nonblocking", "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.out


class PyinstrumentDaemon(Daemon):
    """The daemon run under pyinstrument (its reactor thread), a text report at exit."""

    def __init__(self, config_path, http_port, out):
        super().__init__(config_path, http_port)
        self.out = Path(out)

    def start(self, wait_bound=True, extra=()):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [daemon_harness.PYTHON, "-m", "pyinstrument", "-r", "text", "--no-color",
             "-o", str(self.out), "-m", "gateway.cli", "run", "-c", str(self.config_path),
             *extra], cwd=daemon_harness.REPO, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 30, what="daemon /healthz")
        if wait_bound:
            wait_for(self.all_bound, 30, what="every operator bound")
        return self


def _frame_name(frame):
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']})"


def summarise(raw_path, top=15):
    """Text, per thread: the `top` functions by self samples and our own (gateway/)
    functions by cumulative samples (each counted once per stack), as shares of all
    non-idle samples of every thread."""
    own = collections.defaultdict(collections.Counter)
    own_lines = collections.defaultdict(collections.Counter)   # the leaf's line kept
    cumulative = collections.defaultdict(collections.Counter)
    per_thread = collections.Counter()
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        thread, *frames = stack.split(";")
        if not frames:
            continue
        thread = thread.rpartition(": ")[2]
        own_lines[thread][frames[-1]] += count
        frames = [_frame_name(f) for f in frames]
        per_thread[thread] += count
        own[thread][frames[-1]] += count
        for name in set(frames):
            if "(gateway/" in name and not name.startswith(("main ", "cmd_run ", "serve ")):
                cumulative[thread][name] += count
    total = sum(per_thread.values()) or 1
    lines = [f"{total} samples, idle left out: " + ", ".join(
        f"{thread} {100 * n / total:.0f} %" for thread, n in per_thread.most_common())]
    for thread, _ in per_thread.most_common():
        lines += ["", f"{thread}, self time:", *(
            f"  {100 * n / total:5.1f} %  {name}" for name, n in own[thread].most_common(top))]
        lines += [f"{thread}, self time by line:", *(
            f"  {100 * n / total:5.1f} %  {name}"
            for name, n in own_lines[thread].most_common(top // 2))]
        lines += [f"{thread}, cumulative (gateway/ only):", *(
            f"  {100 * n / total:5.1f} %  {name}"
            for name, n in cumulative[thread].most_common(top))]
    return "\n".join(lines)


def start_profile(kind, pid, out_dir, name):
    """A PySpy on `pid` for kind 'py-spy' (None otherwise)."""
    if kind != "py-spy":
        return None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return PySpy(pid, Path(out_dir) / f"{name}.py-spy.txt")


def finish_profile(spy):
    if spy is None:
        return
    out = spy.stop()
    if out.exists():
        summary = out.with_suffix(".summary.txt")
        summary.write_text(summarise(out))
        print(f"py-spy: {out}, summary {summary}")
    else:
        print(f"py-spy wrote nothing: {spy.proc.stderr.read().decode()[-500:]}")


if __name__ == "__main__":
    print(summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20))
