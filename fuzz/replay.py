"""Run one target on given files (crash files, corpus entries), without atheris:
`python fuzz/replay.py TARGET FILE...`. Exit 1 if any raised."""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets  # noqa: E402


def main(argv):
    target = targets.TARGETS[argv[1]]
    failed = 0
    for path in argv[2:]:
        with open(path, "rb") as file:
            data = file.read()
        try:
            target(data)
        except Exception:
            failed += 1
            print(f"{path}: raised", file=sys.stderr)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
