"""Network registry, model cards and search spaces."""
