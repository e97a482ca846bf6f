"""Shared test helpers. How we test Twisted code under pytest (pytest-twisted is not used):

* Timers and protocol logic: drive them with `twisted.internet.task.Clock` (the `clock`
  fixture) and `twisted.internet.testing.StringTransport`; plain pytest functions, no
  reactor at all. Advance time with `clock.advance(seconds)`.

* Real sockets on 127.0.0.1: write a `twisted.trial.unittest.TestCase` subclass. pytest
  runs trial TestCases through its unittest support, and trial itself spins the global
  reactor for a test method that returns a Deferred (or is `@inlineCallbacks`) until it
  fires. Set the class attribute `timeout = <seconds>` so a hung test fails instead of
  hanging the run; register cleanups with `self.addCleanup(port.stopListening)` etc.
  Trial also fails a test that leaves the reactor dirty (open sockets, pending
  callLater), which catches leaked connections. Do not call reactor.run() yourself.
  Use `wait_until` below to poll for a condition without sleeping the reactor.
"""

import pytest
from twisted.internet import defer, task

from gateway.config.schema import OperatorConfig


@pytest.fixture
def clock():
    return task.Clock()


def operator_config(**overrides):
    """An operator as the config loader hands it to the pool, the sessions and the
    dispatcher (mci at 127.0.0.1:2775, defaults elsewhere), with `overrides`."""
    values = dict(name="mci", host="127.0.0.1", port=2775, system_id="payam",
                  password="secret")
    values.update(overrides)
    return OperatorConfig(**values)


def wait_until(reactor, predicate, interval=0.01):
    """A Deferred that fires once predicate() is true, polled on the real reactor.

    Bound it with the trial TestCase's `timeout`; it never gives up on its own."""
    d = defer.Deferred()

    def check():
        if predicate():
            loop.stop()
            d.callback(None)

    loop = task.LoopingCall(check)
    loop.clock = reactor
    loop.start(interval, now=True).addErrback(d.errback)
    return d


def answered(d):
    """The result of a Deferred that has already fired, as the SQLite store's reads
    have; its failure is raised, and one that has not fired fails the test."""
    outcome = []
    d.addBoth(outcome.append)
    assert outcome, "the Deferred has not fired"
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


# Property tests (tests/test_properties_*.py): the default profile keeps their examples
# few enough that all of them add well under a minute on a loaded machine; run longer
# locally with `pytest --hypothesis-profile=long tests/test_properties_*.py`.
try:
    from hypothesis import HealthCheck, settings
except ImportError:                     # hypothesis is a test extra; only those tests need it
    pass
else:
    settings.register_profile(
        "default", max_examples=60, deadline=None, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile(
        "long", max_examples=5000, deadline=None,
        suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("default")
