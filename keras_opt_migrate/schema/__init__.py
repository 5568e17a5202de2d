"""The versioned optimizer-state schema (in memory and on disk)."""

from .state import GENERATIONS, SCHEMA_VERSION, LazyTensor, OptimizerState, VariableSpec, materialize

__all__ = ["GENERATIONS", "SCHEMA_VERSION", "LazyTensor", "OptimizerState", "VariableSpec", "materialize"]
