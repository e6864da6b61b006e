"""Samplers. Every entry point returns (token maps: list of K int32 (B, pn, pn), decoded images
(B, H, W, 3) in [-1, 1]).

    generate_class(model, labels, rng, cfg=1.5, top_k=900, top_p=0.96, temperature=1.0,
                   more_smooth=False)                                      VAR mode
    translate(model, images, direction, rng, coords=None, **options)    EarthMapper and
        pix2pix modes, dispatched on model.mode through TRANSLATORS (pix2pix returns no
        tokens: (None, images); its options: pix2pix_sampler)
    generate(model, coords, rng, batch=None, **options)                 (returns pairs:
        ((sat_maps, map_maps), (sat_images, map_images)))
    inpaint(model, images, mask, modality, rng, coords=None, condition=None, **options)
    box_mask(size, box, outpaint=False)                                 masks for inpaint

EarthMapper options and guidance: earthmapper_sampler (module doc) and docs/guidance.md.
Token filtering and PRNG sampling helpers shared by all samplers: `filtering`; in-painting
masks: `inpaint_masks`.
"""

from earthmapper_jax.errors import InputError
from earthmapper_jax.sampling import earthmapper_sampler, pix2pix_sampler
from earthmapper_jax.sampling.earthmapper_sampler import generate, inpaint
from earthmapper_jax.sampling.inpaint_masks import box_mask
from earthmapper_jax.sampling.var_sampler import generate_class

# model.mode -> its translate(model, images, direction, rng, coords=None, **options)
TRANSLATORS = {
    "earthmapper": earthmapper_sampler.translate,
    "pix2pix": pix2pix_sampler.translate,
}


def translate(model, images, direction, rng, coords=None, **options):
    """Satellite -> map or map -> satellite with the sampler of `model.mode`."""
    if model.mode not in TRANSLATORS:
        raise InputError(f"a {model.mode!r} model cannot translate; expected one of "
                         f"{sorted(TRANSLATORS)} (an EarthMapper or pix2pix model directory)")
    return TRANSLATORS[model.mode](model, images, direction, rng, coords=coords, **options)


__all__ = ["generate_class", "translate", "generate", "inpaint", "box_mask", "TRANSLATORS"]
