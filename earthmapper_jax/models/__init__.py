"""Transformer models: VAR-exact blocks, class-conditional VAR, EarthMapper (GJSA), DINOv2, loading."""
