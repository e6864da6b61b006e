"""The tokenizer's GAN phase: which parameters each loss term reaches.

One scalar trains both networks (tokenizer/losses.py), so the separation rests entirely on two
stop-gradients: the adversarial term of the generator must not move the discriminator, and the
discriminator's hinge loss must not move the tokenizer. Each is stated as a gradient identity
of the real `loss_fn` (the terms are its returned metrics), plus the hinge formulas on hand values.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from earthmapper_jax.data.synthetic_city import make_batch
from earthmapper_jax.tokenizer import losses
from earthmapper_jax.tokenizer.discriminator import hinge_d_loss, hinge_g_loss

MICRO = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=64,
             image_size=16, patch_nums=(1, 2, 4, 8))
GAN_WEIGHT = 0.3


def _norm(tree):
    return float(sum(np.abs(x).sum() for x in jax.tree_util.tree_leaves(tree)))


@pytest.fixture(scope="module")
def grads():
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(MICRO)
    c.loss = losses.default_loss_config()
    c.loss.update(gan_weight=GAN_WEIGHT, disc_ch=32, disc_layers=1)
    params = nn.meta.unbox(losses.init_params(c, jax.random.key(2)))
    batch = {"image": jnp.asarray(make_batch(2, 16, seed=3)["sat_image"])}

    names = ("loss", "g_adv", "d_loss", "rec_l2", "vq_loss")

    def terms(p):
        loss, m = losses.loss_fn(p, batch, None, c)
        return jnp.stack([loss] + [m[n] for n in names[1:]])

    jac = jax.device_get(jax.jit(jax.jacrev(terms))(params))  # one backward pass per term, one compile
    return {n: jax.tree.map(lambda x, i=i: x[i], jac) for i, n in enumerate(names)}, c


def test_adversarial_term_reaches_the_tokenizer_only(grads):
    g, _ = grads
    assert _norm(g["g_adv"]["disc"]) == 0.0, "the generator's adversarial term updates the discriminator"
    assert _norm(g["g_adv"]["vae"]["decoder"]) > 0


def test_discriminator_loss_reaches_the_discriminator_only(grads):
    g, _ = grads
    assert _norm(g["d_loss"]["vae"]) == 0.0, "the discriminator's loss updates the tokenizer"
    assert _norm(g["d_loss"]["disc"]) > 0


def test_total_gradient_is_the_sum_of_the_terms_on_each_side(grads):
    g, c = grads
    # discriminator: exactly d_loss (weight 1); tokenizer: reconstruction + VQ + gan_weight · G_adv
    def close(got, want):  # float reassociation only: tolerance on the scale of the whole side
        scale = max(float(np.abs(x).max()) for x in jax.tree_util.tree_leaves(want))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale), got, want)

    close(g["loss"]["disc"], g["d_loss"]["disc"])
    want_vae = jax.tree.map(lambda r, q, a: c.loss.l2_weight * r + c.loss.vq_weight * q + GAN_WEIGHT * a,
                            g["rec_l2"]["vae"], g["vq_loss"]["vae"], g["g_adv"]["vae"])
    close(g["loss"]["vae"], want_vae)


def test_hinge_losses_on_hand_values():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.5])
    # 0.5 · (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 · ((0 + .5 + 2)/3 + (0 + 1 + 2.5)/3)
    np.testing.assert_allclose(float(hinge_d_loss(real, fake)), 0.5 * (2.5 / 3 + 3.5 / 3), rtol=1e-6)
    np.testing.assert_allclose(float(hinge_g_loss(fake)), -(-0.5 / 3), rtol=1e-6)
