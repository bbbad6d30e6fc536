"""Expectation propagation for GP classification: the volume's EP estimators run this.

- `run` (`run_ep`, `expectation_propagation`, `EPResult`): one EP run as production does it:
  the block solver for the probit or step likelihood, its value recomputed in float64 from the
  final sites, a stalled or drifted warm start rerun from zero sites.
- `blocks`: THE solver (block sweeps against one running posterior covariance, then Newton
  steps, `newton`), with its one stopping rule and its one warm start, a `WarmPosterior`.
- `posterior`: the running posterior covariance (float64 base + float32 correction) and the
  WarmPosterior; `sites`: cavities, moment matches (`SiteUpdate`: how a likelihood plugs in),
  log Z_EP and its float64 value; `reference`: the slow sequential solver, for tests only;
  `multiclass`: K-class structured EP on the same sites, cavities and log Z_EP.

A new likelihood is a new `SiteUpdate` given to `blocks.block_sequential_ep` (and a new
estimator in the registry, flatvol.volume_settings), not a new pipeline.
"""

from flatvol.volume.ep.posterior import WarmPosterior, kernel_key
from flatvol.volume.ep.run import EPResult, Likelihood, Mode, expectation_propagation, run_ep

__all__ = ["EPResult", "Likelihood", "Mode", "WarmPosterior", "expectation_propagation",
           "kernel_key", "run_ep"]
