"""Evolution strategies, one module each, registered for ``strategy=<name>``."""

from strategies.base import Strategy
from strategies import open_es  # noqa: F401  (imported to register)

__all__ = ["Strategy"]
