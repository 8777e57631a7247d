"""dllab: runnable, seeded, checked reference scenarios for deep learning.

`import dllab` imports no deep-learning framework; each scenario imports its framework inside
the module that needs it. The public surface:

    dllab.registry.get("rl/q-learning-frozenlake")   # a ScenarioSpec
    dllab.runner.run_scenario(spec, seed=0)          # a RunResult
"""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) hides the results; keep warnings.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dllab.errors import DllabError, ScenarioFileError, SkipScenario, UsageError

__version__ = "0.1.0"
__all__ = ["DllabError", "ScenarioFileError", "SkipScenario", "UsageError", "__version__"]
