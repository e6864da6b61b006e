"""Transformer models: VAR-exact blocks, the shared backbone, class-conditional VAR, EarthMapper
(GJSA) with its joint layout, VAR-checkpoint conversion and VAR init, DINOv2, loading."""
