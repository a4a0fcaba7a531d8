"""Evolution strategies, one module each, registered for ``strategy=<name>``."""

from evolopt.strategies import evosax_any, nres, open_es, pes  # noqa: F401  (imported to register)
from evolopt.strategies.base import EvosaxStrategy

__all__ = ["EvosaxStrategy"]
