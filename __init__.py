"""clipcache: decode each video once, run a frozen CLIP encoder once, train light video heads on the cache.

Stage one is `clipcache.pipeline.extract`, the store format `clipcache.cache`, stage two
`clipcache.pipeline.train` and `clipcache.pipeline.evaluate`, the heads `clipcache.heads`.
"""

__version__ = "0.2.0"


class InputError(ValueError):
    """Bad input from the user (a file, an option, a store): the CLI prints the message as one line and
    exits with code 2. Anything else that goes wrong is a bug and keeps its traceback."""
