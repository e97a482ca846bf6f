"""The 4040 authenticity check: a citizen forwards a suspicious text to 4040 and is told
whether an agency sent it to them (desk.py), in Persian with a Jalali date (answers.py,
jalali.py), at most `checks_per_hour` times an hour (limiter.py)."""
