"""Detection metrics and figures."""
