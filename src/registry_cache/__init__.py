"""registry-cache: a multi-upstream pull-through cache for OCI and Docker registries."""

__version__ = "0.1.0"
__all__ = ["__version__"]
