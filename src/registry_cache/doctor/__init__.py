"""``registry-cache doctor``: read a node's runtime configuration, prove its pulls."""
