"""Tools around the product: benchmarks, quality evaluation, diagnostics and the tray app."""
