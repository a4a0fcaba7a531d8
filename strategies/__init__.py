"""Evolution strategies, one module each, registered for ``strategy=<name>``."""

from strategies.base import Strategy
from strategies import evosax_any, nres, open_es, pes  # noqa: F401  (imported to register)

__all__ = ["Strategy"]
