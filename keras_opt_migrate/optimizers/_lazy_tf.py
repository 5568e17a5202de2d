"""`tf` for the algorithm modules, imported on first use.

The algorithm modules hold both the state description (read by the format adapters, which
must not pay for importing TensorFlow) and the update math (which needs it).
"""

import importlib


class _LazyTensorFlow:
    def __getattr__(self, name):
        value = getattr(importlib.import_module("tensorflow"), name)
        setattr(self, name, value)  # cached: later lookups are plain attribute reads
        return value


tf = _LazyTensorFlow()
