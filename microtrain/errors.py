"""The exception hierarchy: every error microtrain raises on bad input is a MicrotrainError.

Each message says what was wrong and what to do about it; the CLI prints it and exits non-zero.
"""


class MicrotrainError(Exception):
    """Root of every error microtrain raises on bad input or an impossible request."""


class UnknownModelError(MicrotrainError):
    """A model name that is neither a reference model nor a readable YAML file."""


class SpecError(MicrotrainError):
    """A model spec (YAML) that is malformed or describes an impossible network."""


class WeightFileError(MicrotrainError):
    """A weight file that is missing, corrupt, truncated, unsafe, or for another model."""


class UnsafePickleError(WeightFileError):
    """A pickle that references anything but numpy's array reconstruction."""


class InputError(MicrotrainError):
    """An input array or image with the wrong shape, dtype or range."""


class ArenaOverflowError(MicrotrainError):
    """A plan that does not fit the arena (or budget) it was given."""


class PlanError(MicrotrainError):
    """A memory plan that is inconsistent (overlapping live buffers, unknown buffer)."""


class ConfigError(MicrotrainError):
    """A sparse-update configuration that is malformed or does not fit the model it is applied to."""


class NumericError(MicrotrainError):
    """NaN or inf in inputs, losses or gradients; raised before any weight is changed."""


class DataError(MicrotrainError):
    """A dataset or episode request that cannot be met: unreadable or missing data, unknown spec, too few
    classes or images for the episode asked for, a missing optional package (Pillow, matplotlib, scikit-learn)."""
