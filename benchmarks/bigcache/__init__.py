"""The big-cache benchmark: see ``__main__.py``."""
