"""The one exception type the jobs turn into a one-line message and exit code 2."""


class JobError(Exception):
    """A problem the user can fix (bad argument, missing input, wrong weights file)."""
