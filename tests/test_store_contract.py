"""The store's seams: who imports what around it."""

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def imported(path):
    """The gateway modules a source file imports (absolute names; `from a import b`
    counts as a and, when b is a module, a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (GATEWAY.parent / node.module.replace(".", "/")
                             / f"{alias.name}.py").exists())
    return {name for name in names if name == "gateway" or name.startswith("gateway.")}


def test_the_shared_records_and_receipt_ids_are_leaves():
    assert imported(GATEWAY / "model.py") == set()
    assert imported(GATEWAY / "receipt_ids.py") == set()


def test_the_store_does_not_import_the_smpp_side():
    for path in (GATEWAY / "store").glob("*.py"):
        smpp = {name for name in imported(path) if name.startswith("gateway.smpp")}
        assert not smpp, f"{path.name} imports {smpp}"


def test_the_dispatcher_knows_the_store_only_by_its_interface():
    store_side = {name for name in imported(GATEWAY / "dispatch.py")
                  if name.startswith("gateway.store")}
    assert store_side == {"gateway.store.interface"}
