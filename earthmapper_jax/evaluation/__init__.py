"""Evaluation metrics of the paper's Table I protocol (see docs: evaluation).

Modules (imported directly; this package module imports nothing so that the numpy-only
`inception_weights` also loads where jax is absent, e.g. in the fixture script's venv):
    inception_weights  the FID Inception-v3 checkpoint layout and converter (numpy)
    inception          pytorch-fid's pool3 features in JAX (resize, network)
    distributions      FID (streaming statistics), KID, precision/recall on feature arrays
    pixels             SSIM, PSNR, RMSE on [0, 1] images
    accumulators       streaming FeatureSet (cacheable) / PairedMeans and distribution_metrics
    run                `earthmapper evaluate`'s loop (Request, evaluate, Extra evaluators); the
                       one module here above models/, sampling/ and train/sharding
    outputs            generated tiles on disk (own outputs, --generated folders), sample rows
    report             table.md with the paper's rows
LPIPS (alex, vgg) lives in earthmapper_jax.tokenizer.lpips, shared with the tokenizer's loss.
"""
