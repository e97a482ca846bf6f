"""One atheris (libFuzzer) run of one target: `python fuzz/fuzz_one.py TARGET [libFuzzer
arguments: corpus directories, -max_total_time=S, ...]`. fuzz/run.py calls this."""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets  # noqa: E402

name = sys.argv.pop(1)
target = targets.TARGETS[name]
# The target imports what it exercises on its first call: instrument those imports
# (our code only) so the fuzzer sees coverage inside the parsers.
with atheris.instrument_imports(include=["gateway"]):
    try:
        target(b"")
    except Exception:
        pass

if name == "pdu":
    # The codec compiles each command's body layout with exec at import: code that
    # instrument_imports never sees. Instrument those functions themselves.
    from gateway.smpp import pdu as codec
    for layout in codec._LAYOUTS.values():
        layout.encode = atheris.instrument_func(layout.encode)
        layout.decode = atheris.instrument_func(layout.decode)

atheris.Setup(sys.argv, target)
atheris.Fuzz()
