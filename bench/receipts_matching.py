"""Receipt matching under adversarial ordering: how many receipts reach the wrong part.

    .venv/bin/python bench/receipts_matching.py [-n 20000] [--early 0.2] [--id-format decimal]

Two operators whose SMSCs hand out the same sequential ids (1, 2, 3, ...), every message
routed to one of them in turn.  Parts go out in batches of `--batch` per operator, as a
window would; for each batch a share `--early` of its receipts is stored BEFORE the
batch's submit outcomes (the receipt overtook its submit_sm_resp), the rest one batch
later.  Each receipt says `failed` with an error naming the operator and id it is for,
so afterwards every part shows which receipt ended it.  Printed: parts ended by another
part's receipt (misattributed; of those, by another operator's), parts left `submitted`
for ever, and the receipt write rate.

--id-format mixed: the SMSCs answer submit_sm in hex and write receipts in decimal;
--id-format hex: both in hex, as the built-in simulator does (most ids then have a
letter, and an `auto` store applies those at once, see gateway/store/receipts.py);
--id-format hex-receipts: submit_sm answered in decimal, receipts in hex (an operator
whose `receipt_ids` is hex: its receipts with a letter must wait all the same).
With a store that takes receipt id modes, --mode chooses what it is told (default auto:
the run then waits a minute for the kept receipts to come of age, as the daemon does).
"""

import argparse
import inspect
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("PAYAM_TREE") or str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task  # noqa: E402

from gateway.store import NewMessage, PartOutcome, Store  # noqa: E402

OPERATORS = ("mci", "irancell")


def ids_for(number, id_format):
    """(submit_sm_resp id, receipt id) the SMSC gives its `number`th message."""
    if id_format == "mixed":
        return f"{number:X}", str(number)
    if id_format == "hex":
        return f"{number:X}", f"{number:X}"
    if id_format == "hex-receipts":
        return str(number), f"{number:X}"
    return str(number), str(number)


@defer.inlineCallbacks
def run(args):
    directory = tempfile.mkdtemp(prefix="payam-receipts-")
    path = os.path.join(directory, "receipts.db")
    store = Store(path, reactor, commit_interval=0.002)
    store.open()
    takes_modes = "id_modes" in inspect.signature(store.apply_receipts).parameters
    modes = {op: args.mode for op in OPERATORS}

    def apply(receipts):
        if not receipts:
            return defer.succeed([])
        if takes_modes:
            return store.apply_receipts(receipts, modes)
        return store.apply_receipts(receipts)

    now = reactor.seconds()
    for first in range(0, args.n, 5000):
        yield store.accept([
            NewMessage(id=store.new_message_id(), agency="tax", sender="40401234",
                       recipient=f"98912{i:07d}", text="t", priority=0, reference=None,
                       validity_s=86400, receipt=True, data_coding=0, esm_class=0,
                       parts=[b"t"], created_at=now, route=OPERATORS[i % 2])
            for i in range(first, min(first + 5000, args.n))])

    counter = dict.fromkeys(OPERATORS, 0)
    late = {op: [] for op in OPERATORS}
    applied = 0
    receipt_seconds = 0.0
    while True:
        claimed_any = False
        for op in OPERATORS:
            parts = yield store.claim(args.batch, reactor.seconds(), route=op)
            if not parts:
                continue
            claimed_any = True
            outcomes, early, later = [], [], []
            for index, part in enumerate(parts):
                counter[op] += 1
                resp_id, receipt_id = ids_for(counter[op], args.id_format)
                outcomes.append(PartOutcome(part.message_id, part.seq, "submitted",
                                            operator=op, smsc_id=resp_id))
                receipt = (op, receipt_id, "failed", f"for {op}:{resp_id}")
                step = round(1 / args.early) if args.early else 0
                (early if step and index % step == 0 else later).append(receipt)
            started = time.perf_counter()
            yield apply(early)                  # overtook the submit_sm_resp
            yield store.record(outcomes)
            yield apply(late[op])               # the previous batch's, on time
            receipt_seconds += time.perf_counter() - started
            applied += len(early) + len(late[op])
            late[op] = later
        if not claimed_any:
            break
    for op in OPERATORS:
        yield apply(late[op])
        applied += len(late[op])
    if takes_modes and args.mode == "auto":
        # What the inbound router does once the kept receipts have come of age.
        from gateway.store.receipts import MATURE_S
        with sqlite3.connect(path) as conn:
            waiting = conn.execute("SELECT COUNT(*) FROM parts"
                                   " WHERE state = 'submitted'").fetchone()[0]
        print(f"auto: {waiting} parts left submitted before the kept receipts come of"
              f" age; waiting {MATURE_S + 1:g} s for that", flush=True)
        yield task.deferLater(reactor, MATURE_S + 1, lambda: None)
        yield store.apply_receipts([], modes, learn=OPERATORS)
    yield store.close()

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT operator, smsc_id, state, error FROM parts").fetchall()
    wrong = cross = stuck = 0
    for operator, smsc_id, state, error in rows:
        if state == "submitted":
            stuck += 1
        elif error != f"for {operator}:{smsc_id}":
            wrong += 1
            if not (error or "").startswith(f"for {operator}:"):
                cross += 1
    print(f"{len(rows)} parts, {applied} receipts ({args.early:.0%} before their submit"
          f" outcome), ids {args.id_format}, mode {args.mode if takes_modes else '(none)'}:"
          f" {wrong} misattributed ({cross} to another operator's part),"
          f" {stuck} left submitted;"
          f" receipts+outcomes {receipt_seconds:.2f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="messages (one part each)")
    parser.add_argument("--batch", type=int, default=100, help="parts per operator batch")
    parser.add_argument("--early", type=float, default=0.2,
                        help="share of receipts stored before their submit outcome")
    parser.add_argument("--id-format", choices=("decimal", "mixed", "hex", "hex-receipts"), default="decimal")
    parser.add_argument("--mode", default="auto", help="receipt_ids given to the store")
    args = parser.parse_args()
    result = {}

    def stop(outcome):
        result["outcome"] = outcome
        reactor.stop()

    reactor.callWhenRunning(lambda: run(args).addBoth(stop))
    reactor.run()
    if hasattr(result.get("outcome"), "printTraceback"):
        result["outcome"].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
