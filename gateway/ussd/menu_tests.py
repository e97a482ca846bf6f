"""Running menu tests (gateway/config/ussd_tests_file.py) against loaded menus, with no
SMSC, no store and no network: dynamic states answer what the test says (else their
fallback), file states answer tracking number 1234567890 and file nothing.

An admin's edit is checked before the reload: `check-config --ussd-tests`."""

from twisted.internet import defer

from gateway.ussd.dialogs import UssdDialogs

TEST_TRACKING = "1234567890"


class _Stubs:
    def __init__(self, responses):
        self.responses = responses

    def fetch(self, state, dialog, **_):
        return defer.succeed(self.responses.get(state.url))

    def file(self, state, dialog, **_):
        return defer.succeed(TEST_TRACKING)

    def close(self):
        return defer.succeed(None)


class _Clock:
    def seconds(self):
        return 0.0


def run_test(menus, test):
    """[problem lines]: empty when the test passes."""
    stubs = _Stubs(test["responses"])
    dialogs = UssdDialogs(menus, clock=_Clock(), dynamic=stubs, filing=stubs)
    key = (test["msisdn"], None)
    problems = []
    for number, step in enumerate(test["steps"]):
        if number == 0:
            d = dialogs.step("test", "new", test["msisdn"], key, test["dial"])
        else:
            d = dialogs.step("test", "continue", test["msisdn"], key, step["send"])
        result = []
        d.addBoth(result.append)
        page = result[0] if result else None
        where = f"{test['file']}:{step['line']}: test {test['name']!r}, step {number + 1}"
        if page is None or not hasattr(page, "text"):
            problems.append(f"{where}: no page came back ({page!r})")
            break
        if step["expect"] is not None and step["expect"] not in page.text:
            problems.append(f"{where}: expected the page to contain {step['expect']!r}, "
                            f"got {page.text!r}")
        if step["end"] is not None and page.end != step["end"]:
            problems.append(f"{where}: expected the dialog to "
                            f"{'end' if step['end'] else 'go on'}, it did "
                            f"{'end' if page.end else 'go on'} with {page.text!r}")
        if problems:
            break
    return problems


def run_tests(menus, tests):
    """(passed count, [problem lines])"""
    problems, passed = [], 0
    for test in tests:
        found = run_test(menus, test)
        problems += found
        passed += not found
    return passed, problems
