"""The one base class of the failures a user is expected to meet and fix themselves.

A bad parameter file, a corrupt or unsafe archive, a checksum mismatch, a download that keeps
failing: the message is one line that names the file, key or URL and the cause, and a stage
ends with that line alone (flows/common.py), not with a traceback.
"""


class PipelineError(Exception):
    """An expected failure whose message says everything the user needs."""
