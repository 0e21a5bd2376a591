"""Command-line tools: ``zoo`` (generate, inspect, validate archives) and ``hyperrep``."""
