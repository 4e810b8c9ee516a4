"""drillkit's one exception tree.

Every error drillkit expects to happen derives from :class:`DrillkitError` and carries the
process exit code the CLI uses for it (``docs/cli.md``, exit codes)::

    DrillkitError                   exit 1 unless a subclass says otherwise
    ├── InputError                  exit 2: bad usage, scenario or argument; nothing was started
    │   ├── ScenarioError           a scenario file is invalid (carries file, line, field)
    │   └── TargetError             a fault target that is not part of this stack
    ├── StateError                  exit 2: the command conflicts with what is running
    │                               (``stack up`` while a stack is up)
    ├── EnvironmentFailure          exit 3: the harness or the environment failed
    │   ├── BackendUnavailable      the backend cannot be used (no Docker, no GPU, ...)
    │   ├── NoStackError            a command needs a running stack and there is none
    │   └── StackNotReady           a service never became ready
    └── ArtifactError               exit 1: a model artifact failed verification
        ├── ManifestError           manifest missing, not JSON, or malformed
        ├── IntegrityError          a file is missing, or its size or digest differs
        ├── SignatureError          the HMAC signature is missing or wrong
        └── SanityGateError         the model verifies but its outputs are broken

A drill that runs and fails its checks is not an exception: it is a report with status
``failed`` (exit 1).

The CLI prints an expected error as one line, ``drillkit: error: <message>``, and exits with
:attr:`DrillkitError.exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DrillkitError(Exception):
    """Base of every error drillkit expects."""

    exit_code: int = 1


class InputError(DrillkitError):
    """Bad input: usage, an argument, a scenario. Nothing was started."""

    exit_code = 2


class ScenarioError(InputError):
    """A scenario file is invalid; the message names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        location = ""
        if path is not None:
            location = f"{path}:{line}: " if line is not None else f"{path}: "
        where = f"{field}: " if field else ""
        super().__init__(f"{location}{where}{message}")
        self.path = path
        self.line = line
        self.field = field


class TargetError(InputError):
    """A fault target that does not belong to this stack."""


class StateError(DrillkitError):
    """The command conflicts with the current state (for example a stack is already up)."""

    exit_code = 2


class EnvironmentFailure(DrillkitError):
    """The environment or the harness failed; the drill result would not be meaningful."""

    exit_code = 3


class BackendUnavailable(EnvironmentFailure):
    """The backend cannot be used here."""


class NoStackError(EnvironmentFailure):
    """A command needs a running stack and none is up."""


class StackNotReady(EnvironmentFailure):
    """A service of the stack did not become ready in time."""


class ArtifactError(DrillkitError):
    """A model artifact failed verification."""

    exit_code = 1


class ManifestError(ArtifactError):
    """The manifest is missing, not valid JSON, or malformed."""


class IntegrityError(ArtifactError):
    """A file listed in the manifest is missing or its size or SHA-256 differs."""


class SignatureError(ArtifactError):
    """The manifest's HMAC signature is missing where required, or does not match."""


class SanityGateError(ArtifactError):
    """The model verified but failed the load-time sanity gate (non-finite or low recall)."""


class MissingFeatures(LookupError):
    """A model version has no features for the user asked about: a serving error (500), not
    the user's fault and not a cold start (a user the model never saw gets popular items)."""
