"""One module per worker, each small and of one shape; shared file logic in ``files.py``."""
