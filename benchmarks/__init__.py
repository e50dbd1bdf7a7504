"""Head-to-head benchmarks of our octopi against the published octopi 1.7.0.

``python -m benchmarks run --suite quick`` (see :mod:`benchmarks.__main__`).
"""
