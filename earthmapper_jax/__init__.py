"""EarthMapper in JAX/Flax: satellite <-> map translation with next-scale prediction.

Notebook entry points (imported lazily so `import earthmapper_jax` stays cheap):

    model = earthmapper_jax.load("ckpt_dir")          # EarthMapper or VAR mode
    tok = earthmapper_jax.tokenizer.load("vae_dir")   # multi-scale VQ-VAE
"""

__version__ = "0.1.0"


def load(directory):
    """Loads a converted/trained transformer checkpoint (config, params, tokenizer)."""
    from earthmapper_jax.models.loading import load as _load

    return _load(directory)
