"""EarthMapper in JAX/Flax: satellite <-> map translation with next-scale prediction.

Notebook entry points (imported lazily so `import earthmapper_jax` stays cheap):

    model = earthmapper_jax.load("ckpt_dir")          # EarthMapper or VAR mode
    tok = earthmapper_jax.tokenizer.load("vae_dir")   # multi-scale VQ-VAE
"""

__version__ = "0.1.0"


def load(directory, **overrides):
    """Loads a converted/trained transformer checkpoint (config, params, tokenizer);
    models.loading.load with its Model API.

    Imported here, not at the top: every `earthmapper` command imports this package first, and
    the CLI's start-up must not pay for JAX and Flax."""
    from earthmapper_jax.models.loading import load as _load

    return _load(directory, **overrides)
