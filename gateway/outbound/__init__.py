"""Outbound messages: the one accept path every channel calls (HTTP, USSD, broadcasts...).

`accept.Outbound.submit(agency, submission.Submission)` applies the sender policy,
idempotency, limits and text encoding, stores the messages and wakes the dispatcher;
`checks.py` holds what every channel's input must pass, and refusals are data
(`errors.py`). Channels parse and answer; this package never imports them.
"""
