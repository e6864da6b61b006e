"""EarthMapper sampling: translation, joint generation, in-/out-painting, with guidance.

Public API (re-exported by earthmapper_jax.sampling):

    translate(model, images, direction, rng, coords=None, **options) -> (token_maps, images)
        direction "sat2map" or "map2sat"; images of the source modality (B, S, S, 3) in [-1, 1].
        The source is tokenised and teacher-forced at every scale (its real tokens, in every
        CFG branch that keeps the condition); the target half is sampled. Returns the target's
        K token maps (B, pn, pn) and decoded images (None with decode=False).
    generate(model, coords, rng, batch=None, **options) -> ((sat_maps, map_maps), (sat_imgs, map_imgs))
        A satellite/map pair from coordinates alone (None = the null coordinate, needs batch).
    inpaint(model, images, mask, modality, rng, coords=None, condition=None, **options)
        -> (token_maps, images)
        images of `modality` ("sat"/"map"); mask (B, S, S) or (S, S) at image resolution, or
        (B, pn_K, pn_K) on the last token grid: True = generate (in-paint), False = keep.
        Out-painting is the inverted mask (`box_mask(..., outpaint=True)`). The kept tokens are
        forced at every scale, the mask resized per scale as VAR's zero-shot editing does
        (sampling/inpaint_masks.py).
        condition: optional images of the other modality, teacher-forced (e.g. repaint a
        satellite region under a known map); otherwise the other modality is generated jointly.

    options (all keyword; `**sampling_config()` (= config.sampling of configs/earthmapper.py)
    works as is):
        guidance=(t1, t2, t3)  guidance triple (guidance.term_weights); default: the paper's
                     best triples, (2, 2, 2) sat2map, (8, 8, 8) map2sat and for generate /
                     inpaint (4, 4, 4); a number t means plain CFG t; (0, 0, 0) = no guidance
                     (one branch only)
        guidance_form="nested"  ControlVAR's nested chain (equal triples = plain CFG of that
                     strength) | "independent" (one summed term per condition)
        complexity=True, gamma=1.0, alpha_power=1.0, beta_min=0.5   Complexity Guidance
                     s = γ·α(r)·β(C); complexity=False -> s = γ·r (VAR's linear ramp)
        kpf_tau=KPF_TAU (0.95)  Key Point Force threshold τ (None = off; only with a condition
                     image); the paper gives no τ, docs/guidance.md says why this one
        top_k=100, top_p=0.55, temperature=1.0   (the paper's top-k / top-p)
        dtype=None    "bfloat16" for a bf16 sampler (the model's config otherwise)
        decode=True   decode the token maps with the tokenizer

    One jax.jit per configuration (batch, roles, branches, top_k, complexity, kpf on/off,
    decode, dtype); the scale loop is unrolled with static offsets into a fixed-size KV cache
    (depth, rows, L, H, D), rows = B × number of CFG branches (batch CFG); no host sync
    inside. Guidance weights, γ, β_min, α power, τ, top-p and temperature are traced values.

    sample_joint(module, tok_module, params, tok_params, coords, known, keep, rng, knobs, *,
                 spec) -> dict: the traced program (tests and benchmarks call it directly).
    sampling_config() -> ConfigDict: the defaults, each call kind's guidance triple under
        guidance_<kind> (sat2map, map2sat, joint)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.blocks import init_caches
from earthmapper_jax.models.geo import validate_coords
from earthmapper_jax.models.layout import MAP, SAT, directed_mask, joint_layout
from earthmapper_jax.models.var_mode import tokenizer_parts
from earthmapper_jax.sampling import guidance as G
from earthmapper_jax.sampling.filtering import sample_tokens
from earthmapper_jax.sampling.inpaint_masks import keep_grid, scale_masks
from earthmapper_jax.scales import flatten_tokens, seq_len

DIRECTIONS = {"sat2map": ("sat", "map"), "map2sat": ("map", "sat")}
MODALITY_NAMES = {"sat": SAT, "map": MAP}
DEFAULT_GUIDANCE = {"sat2map": (2.0, 2.0, 2.0), "map2sat": (8.0, 8.0, 8.0), "joint": (4.0, 4.0, 4.0)}
# Key Point Force is on (paper Table III row 4); τ is not in the paper (docs/guidance.md §4).
KPF_TAU = 0.95
DEFAULTS = dict(complexity=True, gamma=1.0, alpha_power=1.0, beta_min=0.5, kpf_tau=KPF_TAU,
                guidance_form="nested", top_k=100, top_p=0.55, temperature=1.0, dtype=None,
                decode=True)
# Branch name -> (coordinates dropped, condition half nulled).
BRANCHES = {"full": (False, False), "nogeo": (True, False), "nocond": (False, True), "uncond": (True, True)}


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static configuration of one compiled sampler."""

    roles: tuple            # per modality (sat, map): "cond" | "free" | "partial"
    branches: tuple         # ("full", ...extra CFG branches)
    top_k: int
    complexity: bool
    kpf: bool
    decode: bool
    return_logits: bool = False
    lead: Optional[int] = None  # directed translation: the condition half's inputs lead a scale

    @property
    def condition(self) -> Optional[int]:
        for m, r in enumerate(self.roles):
            if r == "cond":
                return m
        return None


def sampling_config() -> ml_collections.ConfigDict:
    """The sampler's defaults as a config (see module doc); the triples are the paper's best
    New York values (Tables IV, V)."""
    c = ml_collections.ConfigDict({k: v for k, v in DEFAULTS.items()
                                   if k not in ("kpf_tau", "dtype", "decode")})
    for kind, triple in DEFAULT_GUIDANCE.items():
        c[f"guidance_{kind}"] = tuple(triple)
    c.kpf_tau = ml_collections.config_dict.FieldReference(KPF_TAU, field_type=float)
    return c


# ----------------------------------------------------------------------------- the program


def sample_joint(module, tok_module, params, tok_params, coords, known, keep, rng, knobs, *, spec: Spec):  # noqa: C901
    """The traced sampler (see module doc).

    coords (B, 2); known: (sat, map) flat tokens (B, Σpn²) int32 (ignored where not kept);
    keep: (sat, map) flat bool (B, Σpn²), True = force the known token; knobs: dict of traced
    scalars weights (3,), gamma, alpha_power, beta_min, tau, top_p, temperature.
    With spec.lead (a directed model translating), the condition half's inputs also carry its
    own current-scale tokens and the mask is layout.directed_mask.
    Returns {"tokens": (sat_maps, map_maps), "images": (sat, map) or None, ["logits": per scale
    {modality: guided logits (B, pn², V)}]}.
    """
    EM = em.EarthMapper
    p, tp = {"params": params}, {"params": tok_params}
    pns = module.patch_nums
    K = len(pns)
    B = coords.shape[0]
    nb = len(spec.branches)
    rows = nb * B
    lay = joint_layout(pns)
    cond_m = spec.condition
    full_mask = directed_mask(pns, module.within_scale, spec.lead)

    drop_geo = jnp.repeat(jnp.asarray([BRANCHES[b][0] for b in spec.branches]), B)
    nulled = jnp.repeat(jnp.asarray([BRANCHES[b][1] for b in spec.branches]), B)
    null = [None, None]
    if cond_m is not None and any(BRANCHES[b][1] for b in spec.branches):
        null[cond_m] = nulled
    cond = module.apply(p, jnp.tile(coords, (nb, 1)), drop_geo, method=EM.condition)
    ids = [None, None]  # a leading condition half's token ids of the current scale
    lead = [None, None]
    if spec.lead is not None:
        ids_all = jnp.tile(known[spec.lead], (nb, 1))
        lead[spec.lead] = ~nulled  # a nulled condition has no inputs to lead with
        ids[spec.lead] = ids_all[:, : module.first_l]
    pyr = [None, None]  # coloc_cond: the condition's f_hat pyramid for the target half
    if spec.lead is not None and module.coloc_cond:
        pyr[spec.lead] = jnp.tile(em.coloc_inputs(True, tok_module, tok_params, (known[spec.lead],) * 2,
                                                  pns)["pyr_sat"], (nb, 1, 1))
    pyr_at = lambda b, e: [None if v is None else v[:, b:e] for v in pyr]  # noqa: E731
    x = module.apply(p, cond, ids[0], ids[1], lead[0], lead[1], *pyr_at(0, module.first_l),
                     method=EM.start_tokens)
    head_dim = module.embed_dim // module.num_heads
    caches = init_caches(module.depth, rows, lay["length"], module.num_heads, head_dim, module.dtype,
                         stacked=module.scan_layers)

    full = pns[-1]
    f_hat = [jnp.zeros((B, full, full, module.cvae), jnp.float32) for _ in range(2)]
    maps = [[], []]
    all_logits = []
    half_b = 0
    for si, pn in enumerate(pns):
        n = pn * pn
        begin = lay["begins"][si]
        mask = full_mask[begin : begin + 2 * n, : begin + 2 * n]
        mask = None if mask.all() else jnp.asarray(mask)[None, None]
        h, caches, _ = module.apply(p, x, cond, mask, caches, begin, method=EM.transformer)
        ratio = G.ramp(si, K)
        rng, *keys = jax.random.split(rng, 3)
        step_logits = {}
        for m in (SAT, MAP):
            kn = known[m][:, half_b : half_b + n]
            kp = keep[m][:, half_b : half_b + n]
            if spec.roles[m] == "cond":
                idx = kn
            else:
                lg = module.apply(p, h[:, m * n : (m + 1) * n], cond, method=EM.logits_from_hidden)
                lg = lg / knobs["temperature"]
                by_branch = {b: lg[i * B : (i + 1) * B] for i, b in enumerate(spec.branches)}
                c = None
                if spec.complexity:
                    c = G.complexity(by_branch["full"], None if spec.roles[m] == "free" else ~kp)
                s = G.complexity_strength(ratio, c, gamma=knobs["gamma"], alpha_power=knobs["alpha_power"],
                                          beta_min=knobs["beta_min"])
                guided = G.multi_term_cfg(
                    by_branch["full"], knobs["weights"], s,
                    nogeo=by_branch.get("nogeo"), nocond=by_branch.get("nocond"),
                    uncond=by_branch.get("uncond"))
                step_logits[m] = guided
                # temperature is already applied above
                idx = sample_tokens(keys[m], guided, spec.top_k, knobs["top_p"], 1.0)
                if spec.kpf and cond_m is not None:
                    ckn = known[cond_m][:, half_b : half_b + n]
                    idx = G.key_point_force(idx, ckn, module.vocab_size, knobs["tau"])
                idx = jnp.where(kp, kn, idx)
            maps[m].append(idx.reshape(B, pn, pn))
        all_logits.append(step_logits)
        nxt = []
        for m in (SAT, MAP):
            emb = tok_module.apply(tp, maps[m][-1], method="embed")
            f_hat[m], nx = tok_module.apply(tp, si, K, f_hat[m], emb, method="next_autoregressive_input")
            nxt.append(nx)
        if si != K - 1:
            pn2 = pns[si + 1]
            xs = [jnp.tile(v.reshape(B, pn2 * pn2, module.cvae), (nb, 1, 1)) for v in nxt]
            if spec.lead is not None:
                b2 = half_b + n
                ids[spec.lead] = ids_all[:, b2 : b2 + pn2 * pn2]
            x = module.apply(p, xs[0], xs[1], si + 1, null[0], null[1], lead[0], lead[1],
                             ids[0], ids[1], *pyr_at(half_b + n, half_b + n + pn2 * pn2),
                             method=EM.scale_tokens)
        half_b += n

    images = None
    if spec.decode:
        images = tuple(
            None if spec.roles[m] == "cond" else tok_module.apply(tp, f_hat[m], method="decode_fhat")
            for m in (SAT, MAP))
    out = {"tokens": (maps[0], maps[1]), "images": images}
    if spec.return_logits:
        out["logits"] = all_logits
    return out


# ----------------------------------------------------------------------------- host side


def _options(kind: str, opts: dict) -> dict:
    """Checked options with defaults; a sampling config's guidance_<kind> keys are accepted
    (guidance_sat2map / guidance_map2sat / guidance_joint: the one of this call is used)."""
    opts = dict(opts)
    per_kind = {k: opts.pop(k) for k in list(opts) if k.startswith("guidance_") and k[9:] in DEFAULT_GUIDANCE}
    if opts.get("guidance") is None and f"guidance_{kind}" in per_kind:
        opts["guidance"] = per_kind[f"guidance_{kind}"]
    unknown = sorted(set(opts) - set(DEFAULTS) - {"guidance"})
    if unknown:
        raise InputError(f"unknown sampling option(s) {unknown}; expected some of {sorted(DEFAULTS) + ['guidance']}")
    o = dict(DEFAULTS)
    o.update(opts)
    g = o.get("guidance")
    g = DEFAULT_GUIDANCE[kind] if g is None else g
    if o["guidance_form"] not in G.GUIDANCE_FORMS:
        raise InputError(f"guidance_form={o['guidance_form']!r}; expected one of {G.GUIDANCE_FORMS}")
    plain = (lambda t: (t, t, t)) if o["guidance_form"] == "nested" else (lambda t: (0.0, 0.0, t))
    try:
        g = tuple(float(v) for v in (g if np.ndim(g) else plain(g)))
    except (TypeError, ValueError):
        raise InputError(f"guidance {g!r} must be a number or a triple (w_geo, w_cond, w_both)") from None
    if len(g) != 3:
        raise InputError(f"guidance {g!r} must be a triple (w_geo, w_cond, w_both)")
    o["guidance"] = g
    tk = o["top_k"]
    if isinstance(tk, bool) or int(tk) != tk or tk < 0:
        raise InputError(f"top_k must be an integer >= 0, got {tk!r}")
    if not 0.0 <= float(o["top_p"]) <= 1.0:
        raise InputError(f"top_p must lie in [0, 1], got {o['top_p']!r}")
    if not float(o["temperature"]) > 0.0:
        raise InputError(f"temperature must be > 0, got {o['temperature']!r}")
    tau = o["kpf_tau"]
    if tau is not None and not 0.0 <= float(tau) <= 1.0:
        raise InputError(f"kpf_tau must be None or in [0, 1], got {tau!r}")
    if not 0.0 <= float(o["beta_min"]) <= 1.0:
        raise InputError(f"beta_min must lie in [0, 1], got {o['beta_min']!r}")
    return o


def _check_model(model):
    if model.mode != "earthmapper":
        raise InputError(f"this sampler needs an EarthMapper-mode model, this one is {model.mode!r}")


def _run(model, coords, known, keep, roles, rng, o, return_logits=False):
    """Builds (cached) and calls the jitted program for these roles and options."""
    c = model.config
    has_cond = "cond" in roles
    geo_given = not np.isnan(coords).all()
    w = G.term_weights(o["guidance"], o["guidance_form"], geo_given, has_cond)
    branches = ("full",) + G.needed_branches(w, has_cond)
    B = coords.shape[0]
    directed = has_cond and float(c.get("directed_rate", 0.0)) > 0
    spec = Spec(roles=tuple(roles), branches=branches, top_k=int(o["top_k"]),
                complexity=bool(o["complexity"]), kpf=o["kpf_tau"] is not None and has_cond,
                decode=bool(o["decode"]), return_logits=return_logits,
                lead=roles.index("cond") if directed else None)
    dtype = o["dtype"] or c.dtype
    key = ("earthmapper_sample", B, spec, dtype)

    def make():
        tok_module, _ = tokenizer_parts(model.tokenizer)
        module = em.build(c, dtype=dtype, attention=c.get("sample_attention", c.attention))
        return jax.jit(functools.partial(sample_joint, module, tok_module, spec=spec))

    fn = model.cached_jit(key, make)
    _, tok_params = tokenizer_parts(model.tokenizer)
    knobs = {
        "weights": jnp.asarray(w, jnp.float32), "gamma": jnp.float32(o["gamma"]),
        "alpha_power": jnp.float32(o["alpha_power"]), "beta_min": jnp.float32(o["beta_min"]),
        "tau": jnp.float32(o["kpf_tau"] if o["kpf_tau"] is not None else 2.0),
        "top_p": jnp.float32(o["top_p"]), "temperature": jnp.float32(o["temperature"]),
    }
    return fn(model.params, tok_params, jnp.asarray(coords), known, keep, rng, knobs)


def _encode(model, images, what: str):
    try:
        return flatten_tokens(model.tokenizer.encode(images))
    except InputError as e:
        raise InputError(f"{what}: {e}") from None


def translate(model, images, direction, rng, coords=None, **options):
    """Satellite -> map or map -> satellite (see module doc)."""
    _check_model(model)
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction {direction!r}; expected one of {sorted(DIRECTIONS)}")
    o = _options(direction, options)
    src, _ = DIRECTIONS[direction]
    src_tokens = _encode(model, images, f"{src} images")
    B = src_tokens.shape[0]
    coords = validate_coords(coords, B)
    zeros = jnp.zeros_like(src_tokens)
    known = [zeros, zeros]
    keep = [jnp.zeros(src_tokens.shape, bool)] * 2
    roles = ["free", "free"]
    s = MODALITY_NAMES[src]
    known[s], keep[s], roles[s] = src_tokens, jnp.ones(src_tokens.shape, bool), "cond"
    out = _run(model, coords, tuple(known), tuple(keep), roles, rng, o)
    t = 1 - s
    return out["tokens"][t], (out["images"][t] if out["images"] else None)


def generate(model, coords, rng, batch=None, **options):
    """A (satellite, map) pair from coordinates (see module doc)."""
    _check_model(model)
    o = _options("joint", options)
    coords = validate_coords(coords, batch)
    B = coords.shape[0]
    Lh = seq_len(model.config.patch_nums)
    zeros = jnp.zeros((B, Lh), jnp.int32)
    no = jnp.zeros((B, Lh), bool)
    out = _run(model, coords, (zeros, zeros), (no, no), ("free", "free"), rng, o)
    return out["tokens"], out["images"]


def inpaint(model, images, mask, modality, rng, coords=None, condition=None, **options):
    """In-/out-painting of one modality (see module doc)."""
    _check_model(model)
    if modality not in MODALITY_NAMES:
        raise InputError(f"unknown modality {modality!r}; expected 'sat' or 'map'")
    o = _options("joint", options) if condition is None else _options(
        "map2sat" if MODALITY_NAMES[modality] == SAT else "sat2map", options)
    m = MODALITY_NAMES[modality]
    tokens = _encode(model, images, f"{modality} images")
    B = tokens.shape[0]
    coords = validate_coords(coords, B)
    pns = tuple(model.config.patch_nums)
    kg = keep_grid(mask, B, model.tokenizer.image_size, pns[-1])
    kp = jnp.asarray(np.concatenate([k.reshape(B, -1) for k in scale_masks(kg, pns)], 1))
    known = [jnp.zeros_like(tokens)] * 2
    keep = [jnp.zeros(tokens.shape, bool)] * 2
    roles = ["free", "free"]
    known[m], keep[m], roles[m] = tokens, kp, "partial"
    if condition is not None:
        ct = _encode(model, condition, "condition images")
        if ct.shape[0] != B:
            raise InputError(f"{ct.shape[0]} condition images for {B} images")
        known[1 - m], keep[1 - m], roles[1 - m] = ct, jnp.ones(ct.shape, bool), "cond"
    out = _run(model, coords, tuple(known), tuple(keep), roles, rng, o)
    return out["tokens"][m], (out["images"][m] if out["images"] else None)
