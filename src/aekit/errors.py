"""The one error type a user can cause.

Everything raised as :class:`AekitError` is the user's to fix (a missing file,
a bad option value, a corrupt checkpoint); the CLI prints its message as one
line and exits with status 2. Anything else is a bug in aekit.
"""


class AekitError(Exception):
    """A problem with the user's input, files or options, with a message to act on."""


class Interrupted(AekitError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint it can resume from."""


class AekitWarning(UserWarning):
    """Something aekit fixed for you but you should know about (the CLI prints it as one line)."""


class ReportedElsewhere(AekitError):
    """Raised on the other processes of a torchrun job when one of them failed: that one reports the error."""
