"""The errors dllab raises on purpose; the CLI turns each into one line and exit status 2."""


class DllabError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""


class UsageError(DllabError):
    """Bad input: an unknown id, a bad --set, a framework or device not available here."""


class ScenarioFileError(DllabError):
    """A scenario TOML file that does not follow the scenario contract (names file and field)."""


class SkipScenario(Exception):
    """Raised by a scenario that cannot run in this install or on this device (with the reason)."""
