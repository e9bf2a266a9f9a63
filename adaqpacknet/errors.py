"""The package's own errors on bad input. Each message names the file or the value at fault (and,
where there is one, the valid choices), and each is raised before any work starts on it.

They subclass ValueError, so code that caught the ValueErrors of earlier versions still catches them.
"""


class AdaQPacknetError(ValueError):
    """Base of every error the package raises on bad input (a value, a file, data)."""


class ConfigError(AdaQPacknetError):
    """A config field, parameter file, profile or command-line value outside what the package accepts."""


class CorruptFileError(AdaQPacknetError):
    """A data, results, checkpoint, lock or packed file that cannot be trusted; the message names the file."""
