"""XLA compile options for the tests' jits (conftest.py compiles everything else at -O0)."""

# The backend's default optimization, for the few tests whose float32 results sit at the edge
# of their tolerance and were written against it (an iterative solver's fixed point).
FULL_OPTIMIZATION = {"xla_backend_optimization_level": 3,
                     "xla_llvm_disable_expensive_passes": False}
