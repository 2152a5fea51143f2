"""``python -m benchmarks [OPTIONS]``: run the side-by-side performance suite."""

from .cli import main

main()
