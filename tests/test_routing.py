"""Prefix routing: candidates in preference order, first rule wins, fallbacks, default."""

import os
import random

import pytest

from gateway.dispatch import routing as routing_module
from gateway.config import Routing, RoutingRule, load_routing
from gateway.dispatch.routing import OperatorRouter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rule(prefixes, operator, *fallback):
    return RoutingRule(prefixes=tuple(prefixes), operator=operator, fallback=fallback,
                       origin="test:1")


def reference_candidates(routing, msisdn):
    """The contract's meaning, written the slow obvious way."""
    for r in routing.rules:
        if any(msisdn.startswith(p) for p in r.prefixes):
            return (r.operator,) + tuple(r.fallback)
    return (routing.default,) if routing.default else ()


@pytest.fixture(scope="module")
def sample_router():
    routing = load_routing(os.path.join(ROOT, "routing_rules"), {"mci", "irancell", "rightel"})
    return OperatorRouter(routing)


@pytest.mark.parametrize("national_prefix, expected", [
    *[(f"091{d}", ("mci", "irancell")) for d in range(10)],
    *[(p, ("mci", "irancell")) for p in ("0990", "0991", "0992", "0993", "0994", "0996",
                                          "0932")],
    *[(p, ("irancell", "mci")) for p in ("0930", "0933", "0935", "0936", "0937", "0938",
                                          "0939", "0900", "0901", "0902", "0903", "0904",
                                          "0905", "0941")],
    *[(p, ("rightel", "mci")) for p in ("0920", "0921", "0922", "0923", "0998")],
    ("0995", ("mci",)),                    # unallocated: the default
    ("0999", ("mci",)),
])
def test_sample_rules_follow_the_original_allocations(sample_router, national_prefix,
                                                      expected):
    msisdn = "98" + national_prefix[1:] + "1234567"
    assert len(msisdn) == 12
    assert sample_router.candidates(msisdn) == expected


def test_first_rule_wins_whatever_the_prefix_length():
    routing = Routing(rules=(rule(["98912345"], "special"), rule(["9891"], "mci", "irancell"),
                             rule(["989123"], "never")), default="mci")
    router = OperatorRouter(routing)
    assert router.candidates("989123456789") == ("special",)
    assert router.candidates("989123999999") == ("mci", "irancell")
    assert router.candidates("989151234567") == ("mci", "irancell")
    # a prefix listed by two rules belongs to the first
    router = OperatorRouter(Routing(rules=(rule(["98935"], "irancell"), rule(["98935"], "mci")),
                            default=None))
    assert router.candidates("989351234567") == ("irancell",)


def test_no_match_gives_the_default_or_nothing():
    rules = (rule(["98912"], "mci"),)
    assert OperatorRouter(Routing(rules=rules, default="irancell")).candidates("989351234567") == (
        "irancell",)
    assert OperatorRouter(Routing(rules=rules, default=None)).candidates("989351234567") == ()
    assert OperatorRouter(Routing(rules=(), default="mci")).candidates("989121234567") == ("mci",)


def test_choose_prefers_the_rule_operator_then_fallbacks_in_order():
    router = OperatorRouter(Routing(rules=(rule(["98912"], "mci", "irancell", "rightel"),),
                            default="rightel"))
    msisdn = "989121234567"
    assert router.choose(msisdn, lambda op: True) == "mci"
    assert router.choose(msisdn, lambda op: op != "mci") == "irancell"
    assert router.choose(msisdn, lambda op: op == "rightel") == "rightel"
    assert router.choose(msisdn, lambda op: False) is None
    # unmatched numbers only ever go to the default
    assert router.choose("989351234567", lambda op: op == "rightel") == "rightel"
    assert router.choose("989351234567", lambda op: op == "mci") is None


def test_choose_without_default_and_no_match_waits():
    router = OperatorRouter(Routing(rules=(rule(["98912"], "mci"),), default=None))
    assert router.choose("989351234567", lambda op: True) is None


def test_choose_asks_only_until_a_bound_candidate_is_found():
    router = OperatorRouter(Routing(rules=(rule(["98912"], "mci", "irancell", "rightel"),),
                            default=None))
    asked = []

    def is_bound(op):
        asked.append(op)
        return op == "irancell"

    assert router.choose("989121234567", is_bound) == "irancell"
    assert asked == ["mci", "irancell"]


def test_compiled_lookup_agrees_with_the_reference_on_random_rules(monkeypatch):
    monkeypatch.setattr(routing_module, "_CACHE_LIMIT", 50)    # exercise cache eviction
    rng = random.Random(20240601)
    operators = ["mci", "irancell", "rightel", "tci"]
    for _ in range(20):
        rules = []
        for _ in range(rng.randint(0, 6)):
            prefixes = ["98" + "".join(rng.choice("0123459") for _ in range(rng.randint(0, 4)))
                        for _ in range(rng.randint(1, 4))]
            operator, *fallback = rng.sample(operators, rng.randint(1, 3))
            rules.append(rule(prefixes, operator, *fallback))
        routing = Routing(rules=tuple(rules), default=rng.choice(operators + [None]))
        router = OperatorRouter(routing)
        for _ in range(300):
            msisdn = "989" + "".join(rng.choice("0123459") for _ in range(9))
            assert router.candidates(msisdn) == reference_candidates(routing, msisdn), msisdn


def test_the_route_of_a_number_whose_prefix_was_seen_runs_no_further_python_call():
    # A broadcast asks the route of every recipient (1,000,000 before its 202): a
    # remembered prefix is answered in preferred() itself, not through candidates().
    import sys
    router = OperatorRouter(Routing(rules=(RoutingRule(prefixes=("98912",), operator="mci",
                                                       fallback=(), origin="t:1"),),
                                    default="irancell"))
    assert router.preferred("989121234567") == "mci"
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        route = router.preferred("989127654321")
    finally:
        sys.setprofile(None)
    assert (route, calls[1:]) == ("mci", [])
    assert router.preferred("989351234567") == "irancell"
