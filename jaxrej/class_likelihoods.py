"""Moved: all-class scoring lives in `jaxrej.scoring` (re-exported by `jaxrej`)."""

raise ImportError(
    "jaxrej.class_likelihoods was replaced by jaxrej.scoring: class_log_likelihoods and "
    "class_log_likelihood_result (pure, differentiable; screen=jaxrej.TopK(...)), and "
    "cascade_class_log_likelihoods(..., screens=[jaxrej.Screen(...)]) for the host cascade"
)
