"""The platform's own sender: messages the gateway itself sends from the root number
4040 (answers to the authenticity check), never an agency's.

It is no agency's: no key authenticates as it (the KeyRing holds only configured
agencies), its id cannot be a configured agency's (ids are `[a-z0-9_-]`), and an agency
asking to send from "4040" is refused by the sender policy like any number not assigned
to it (configured numbers are 4040 plus at least one digit), and audited. Platform
messages go through the one accept path without the agency limits (the callers bound
them: the check's per-citizen rate), are counted in `payam_platform_messages_total`,
audited one row each (kind, hashed recipient, message id), and are not fingerprinted:
a forwarded 4040 answer is not a notice.
"""

from gateway.config.schema import Agency
from gateway.model import HIGH

ROOT_NUMBER = "4040"
PLATFORM_ID = "@4040"
PLATFORM = Agency(id=PLATFORM_ID, name="Payam 4040", keys=(), numbers=(ROOT_NUMBER,),
                  masks=(), ussd_code=None, rate_per_s=0.0, daily_parts=0,
                  reply_webhook=None)
PRIORITY = HIGH                 # answered within seconds, ahead of bulk notices
VALIDITY_S = 3600               # an answer that cannot reach the citizen within the hour
                                # is no answer any more
KINDS = ("authenticity",)       # the metric's label values
