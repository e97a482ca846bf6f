"""Per-request cost of the text layer: µs per call for typical messages. Figures only.

    .venv/bin/python bench/text.py [--number 20000]
"""

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.numbers import normalize_msisdn  # noqa: E402
from gateway.text import count_parts, encode_for_submit, encode_message  # noqa: E402

PERSIAN_2_PARTS = ("مؤدی گرامی، مهلت تسلیم اظهارنامه‌ی مالیاتی عملکرد سال ۱۴۰۲ تا ۳۱ خرداد "
                   "است؛ لطفاً از درگاه «my.tax.gov.ir» اقدام کنید.")
GSM_1_PART = "Your tax return for 2023 is due on 20 June. Pay at my.tax.gov.ir - Tax Org [ref 4711]"
GSM_3_PARTS = ("Notice: " + "your appointment is confirmed {ok}. " * 12)[:400]


def per_call_us(statement, number):
    # Best of 5 runs: the machine is shared and noisy; the minimum is the honest cost.
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per run")
    number = parser.parse_args().number
    cases = [
        ("encode_message, Persian, 2 parts", lambda: encode_message(PERSIAN_2_PARTS, 7)),
        ("encode_message, GSM, 1 part", lambda: encode_message(GSM_1_PART, 7)),
        ("encode_message, GSM with escapes, 3 parts", lambda: encode_message(GSM_3_PARTS, 7)),
        ("encode_for_submit, Persian, 2 parts", lambda: encode_for_submit(PERSIAN_2_PARTS, 7)),
        ("count_parts, Persian, 2 parts", lambda: count_parts(PERSIAN_2_PARTS)),
        ("normalize_msisdn, Persian digits", lambda: normalize_msisdn("۰۹۱۲۱۲۳۴۵۶۷")),
    ]
    assert len(encode_message(PERSIAN_2_PARTS, 7).parts) == 2
    assert len(encode_message(GSM_1_PART, 7).parts) == 1
    assert len(encode_message(GSM_3_PARTS, 7).parts) == 3
    for label, statement in cases:
        print(f"{label:45s} {per_call_us(statement, number):7.2f} µs")


if __name__ == "__main__":
    main()
