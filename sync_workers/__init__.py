"""sync-workers: collect AI conversations from every tool you use into one store, exactly once."""

__version__ = "0.1.0"
