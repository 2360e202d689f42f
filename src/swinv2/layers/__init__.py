"""Generic pieces of a windowed vision transformer, in plain PyTorch: no fast path is imported here."""
