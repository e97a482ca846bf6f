"""The import rules of docs/architecture.md, checked over the source: one direction of
flow, HTTP → policy → outbound → store → dispatch → smpp, and back smpp → inbound →
store. A module imports only what it calls (later in that flow) or a leaf, never its
callers; only the composition root (service, cli, demo) sees everything."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "gateway"

# Leaves: plain values and helpers anyone may use; they import no other unit.
# smpp.constants is the protocol's numbers (TON, data codings, esm_class bits): the text
# codec and the simulator use the same ones.  token_bucket: the one token bucket, an
# operator's TPS (smpp) and an agency's rate (policy) both count with it.
LEAVES = {"numbers", "text", "metrics", "model", "receipt_ids", "config.schema",
          "smpp.constants", "token_bucket", "national_id", "__version__"}

# unit → the units (besides leaves) it may import.
ALLOWED = {
    "smpp": set(),
    "store": set(),
    "policy": set(),
    "logsetup": set(),
    "reactor_events": set(),          # the epoll loop without a log context per event
    "dispatch": {"smpp", "store"},
    "inbound": {"smpp", "store", "inbox", "outbound"},
    "inbox": {"store"},
    "outbound": {"policy", "store", "citizens"},   # national IDs resolved at accept
    "authenticity": {"outbound", "store"},
    "http": {"outbound", "policy", "store", "inbox", "national_inbox"},
    "housekeeping": {"store"},
    "listening": set(),
    "systemd": set(),
    "admin": {"http"},
    "gauges": {"store"},
    "webhook": {"store", "inbox"},
    "simulator": {"smpp"},
    "ussd": {"outbound"},             # USSD dialogs: filing's SMS through the accept path
    "config": set(),
    "mail": {"store"},                # the email fallback: due rows from the store, SMTP
    "citizens": set(),                # the directory (national ID → number): a lookup
    "national_inbox": {"citizens", "inbox"},   # partner apps: identity check, reads, replies
    "service": {"*"},
    "procs": {"*"},                   # the split daemon: a composition root too
    "cli": {"*"},
    "demo": {"*"},
}


def unit_of(module):
    """'gateway.config.schema' → 'config.schema' (a leaf); 'gateway.smpp.pdu' → 'smpp'."""
    parts = module.split(".")[1:]
    if parts[:2] in (["config", "schema"], ["smpp", "constants"]):
        return ".".join(parts[:2])
    return parts[0] if parts else "gateway"


def imports_of(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "gateway":          # from gateway import metrics
                names = [f"gateway.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("gateway."):
                yield node.lineno, name


# Outside the composition root, the store is reached through its interface only (a
# PostgreSQL store will implement the same one); the inbound receipts' timing constants
# are the store's own rule, read from where it is kept.
STORE_FACES = {"gateway.store.interface", "gateway.store.receipts"}


def sources():
    return sorted(p for p in ROOT.rglob("*.py"))


def test_every_unit_has_a_rule():
    units = {unit_of("gateway." + ".".join(p.relative_to(ROOT).with_suffix("").parts))
             for p in sources() if p.name != "__init__.py" or p.parent != ROOT}
    missing = units - set(ALLOWED) - LEAVES - {"gateway"}
    assert not missing, f"give these units a rule in ALLOWED: {sorted(missing)}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_flow(path):
    module = "gateway." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = unit_of(module)
    allowed = ALLOWED.get(own, set())
    wrong = []
    for line, name in imports_of(path):
        target = unit_of(name)
        if target == "store" and own != "store" and "*" not in allowed \
                and name not in STORE_FACES:
            wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {own} imports {name}"
                         " (use gateway.store.interface)")
            continue
        if target == own or target in LEAVES or "*" in allowed or target in allowed:
            continue
        if own in LEAVES and target in LEAVES:
            continue
        wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {own} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_leaves_import_only_leaves():
    for path in sources():
        module = "gateway." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if unit_of(module) not in LEAVES:
            continue
        for line, name in imports_of(path):
            assert unit_of(name) in LEAVES, f"{path}:{line}: leaf imports {name}"


def test_one_token_bucket_counts_both_rates():
    # An operator's TPS and an agency's rate: one implementation (issue 7, item 5).
    for unit in ("smpp/ratelimit.py", "policy/limits.py"):
        names = {name for _, name in imports_of(ROOT / unit)}
        assert "gateway.token_bucket" in names, f"{unit} counts tokens on its own"
    defined = [str(path.relative_to(ROOT)) for path in sources()
               if "class TokenBucket" in path.read_text()]
    assert defined == ["token_bucket.py"]
