"""microtrain: on-device training for microcontroller-class CNNs (TinyTrain), in NumPy + Numba.

A reference implementation: int8 inference bit-exact with TFLite Micro, a planned byte-exact arena,
and (as the project grows) the hand-written partial backward and TinyTrain's task-adaptive sparse update.
"""

from microtrain import blas_env  # noqa: F401  (first: it sets OpenBLAS's idle-thread wait before NumPy loads)
from microtrain.errors import (  # noqa: F401
    ArenaOverflowError,
    ConfigError,
    DataError,
    InputError,
    MicrotrainError,
    NumericError,
    PlanError,
    SpecError,
    UnknownModelError,
    UnsafePickleError,
    WeightFileError,
)
from microtrain.graph import load_graph  # noqa: F401
from microtrain.model import Model, load_model, random_model  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "ArenaOverflowError", "ConfigError", "DataError", "InputError", "NumericError", "MicrotrainError", "PlanError", "SpecError", "UnknownModelError",
    "UnsafePickleError", "WeightFileError", "load_graph", "Model", "load_model", "random_model",
]
