"""Dispatch: from the store's queue to the operators' binds.

dispatcher.py claims parts, holds them in each operator's lane within its window and TPS
and records outcomes; routing.py picks the operators that may carry a number;
outgoing_pdu.py builds the submit_sm for one part.
"""

from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.routing import OperatorRouter

__all__ = ["Dispatcher", "OperatorRouter"]
