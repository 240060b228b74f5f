"""The one exception type of the data layer."""


class DataError(Exception):
    """Bad dataset input or config; the message names the offending file or folder and the problem.

    Raised by :func:`benchmark.data.load_dataset` before any training starts.
    """
