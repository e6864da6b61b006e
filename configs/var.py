"""VAR transformer configs (class-conditional VAR mode), one per released depth plus "tiny".

    get_config("d16")  # also d20, d24, d30, d36 (512 px, shared AdaLN), tiny (CPU tests)

Shapes follow VAR's build_vae_var: width = 64 * depth, heads = depth, drop_path_rate =
0.1 * depth / 24, mlp_ratio 4. The tokenizer fields (patch_nums, vocab_size, cvae) must match
the tokenizer the model is used with.

Run (prints the config):
    .venv/bin/python -c "import configs.var as c; print(c.get_config('d16'))"
"""

from earthmapper_jax.models.var import var_config


def get_config(arg=None):
    return var_config(arg or "d16")
