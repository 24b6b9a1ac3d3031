"""The built-in strategies, one module each."""
