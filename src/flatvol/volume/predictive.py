"""The Bayesian posterior on E given S, and the probability P_B(f|S) of a labelling of E under it.

Mingard et al. compare how often an optimizer finds a function f on E, P_opt(f|S), with a
Bayesian posterior P_B(f|S) of the same prior (the NNGP kernel K of S u E). Which posterior
that is must be said, because the answer depends on it. Three are here, one registry
(`POSTERIORS`), each a Gaussian predictive of the latent z_E given S plus a rule that turns z_E
into labels:

- 'ep-orthant' (flatvol's default): the noise-free step likelihood 1[y z > 0] on S (the
  network computes y_S exactly), the posterior on z_S approximated by step-EP, f = sign(z_E);
- 'ep-probit': the probit likelihood Phi(y z) on S and on E (the original authors' GPy code):
  probit-EP on S, and P_B(f|S) = E prod_e Phi(f_e z_e), the orthant of z_E + N(0, I);
- 'gp-regression': exact GP regression on 0/1 targets without noise (interpolating S, as a
  network trained with the mean squared error does), f = 1[z_E > 1/2].

P_B(f|S) = P(f on E | predictive) is then a |E|-dimensional Gaussian orthant probability with a
mean, estimated by importance sampling with its standard error (orthant.
shifted_orthant_probability). For the two EP posteriors this is a two-stage value: EP fits S
once, and f_E is integrated against that Gaussian, not refitted jointly with S (the ratio
V(y_S, f_E) / V(y_S) of two EP runs that flatvol.volume.VolumeService.conditional gives); the
two differ by EP's own error, which bench/RESULTS.md measures. Its cost is one EP on S for all
functions and all draws of E from a pool, where the joint value costs an EP on S u E per
function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from flatvol.errors import VolumeError
from flatvol.volume._numerics import LN10, as_kernel, as_signed_labels, jittered_cholesky
from flatvol.volume.ep import run_ep
from flatvol.volume.orthant import OrthantEstimate, shifted_orthant_probability

# name -> (what it is, in one line); the CLI, the sgd-vs-bayes spec and the report read it
POSTERIORS: dict[str, str] = {
    "ep-orthant": "noise-free step likelihood on S, step-EP; f = sign(z_E)",
    "ep-probit": "probit likelihood on S and E, probit-EP (the authors' GPy code)",
    "gp-regression": "exact GP regression on 0/1 targets, no noise; f = 1[z_E > 1/2]",
}


@dataclass(frozen=True)
class Predictive:
    """The Gaussian predictive of the latent on the points after S, and how it labels them.

    A labelling f of some of those points has probability P(f_e (z_e + eps_e - threshold) > 0
    for each e), z ~ N(mean, cov), eps ~ N(0, noise_var I)."""

    posterior: str  # a name of POSTERIORS
    mean: np.ndarray  # (m,) latent mean on the m points after S
    cov: np.ndarray  # (m, m) latent covariance
    threshold: float  # 0 for the EP posteriors, 1/2 for regression on 0/1 targets
    noise_var: float  # 1 for probit, 0 otherwise
    log10_v_train: float  # log10 of the evidence of y_S (EP's; the Gaussian one for regression)
    converged: bool  # whether EP on S converged (True for regression)

    def log10_probability(self, labels: np.ndarray, points: np.ndarray | None = None, *,
                          n_samples: int = 4000, seed: int = 0) -> PosteriorProbability:
        """log10 P_B(f|S) of a labelling of some of the points after S.

        Args:
            labels: their labels, {0, 1} or {-1, +1}.
            points: their indices among the points after S (None: all, in order).
            n_samples: importance samples.
            seed: seed of the samples.

        Returns:
            The PosteriorProbability (value, standard error, whether the error bar holds).

        Raises:
            VolumeError: labels of another length than the points, or indices out of range.
        """
        idx = np.arange(self.mean.size) if points is None else np.asarray(points)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) \
                or idx.min() < 0 or idx.max() >= self.mean.size:
            raise VolumeError(f"points: expected indices in 0..{self.mean.size - 1}, got "
                              f"{idx if idx.size <= 5 else idx.shape}")
        y = as_signed_labels(labels, idx.size)
        cov = self.cov[np.ix_(idx, idx)]
        if self.noise_var:
            cov = cov + self.noise_var * np.eye(idx.size)
        est = shifted_orthant_probability(cov, self.mean[idx] - self.threshold, y,
                                          n_samples=n_samples, seed=seed)
        return PosteriorProbability(est.log_probability / LN10, est.stderr_log10,
                                    est.reliable, est)


@dataclass(frozen=True)
class PosteriorProbability:
    log10_probability: float
    stderr_log10: float
    reliable: bool  # the standard error holds (OrthantEstimate.reliable)
    estimate: OrthantEstimate


def posterior_predictive(kernel: np.ndarray, y_S: np.ndarray, posterior: str = "ep-orthant",
                         *, tol: float = 1e-3) -> Predictive:
    """The predictive of `posterior` on the points after S.

    Args:
        kernel: (n, n) prior kernel of S u E, the |S| = len(y_S) points of S first.
        y_S: labels of S, {0, 1} or {-1, +1}.
        posterior: a name of POSTERIORS.
        tol: EP's convergence tolerance.

    Returns:
        The Predictive.

    Raises:
        VolumeError: an unknown posterior, a kernel that is not a valid covariance, labels
            that do not fit it, or no points after S.
    """
    if posterior not in POSTERIORS:
        raise VolumeError(f"posterior: expected one of {', '.join(POSTERIORS)}, got "
                          f"{posterior!r}")
    K = as_kernel(kernel)
    y = as_signed_labels(y_S)
    n_S = y.size
    if not 0 < n_S < K.shape[0]:
        raise VolumeError(f"y_S: expected 1..{K.shape[0] - 1} labels (the points of S, the "
                          f"rest of the kernel's {K.shape[0]} are E), got {n_S}")
    K_SS, K_SE, K_EE = K[:n_S, :n_S], K[:n_S, n_S:], K[n_S:, n_S:]
    L_S, jitter = jittered_cholesky(K_SS, name="kernel of S")
    if jitter:
        K_SS = K_SS + jitter * np.eye(n_S)
    if posterior == "gp-regression":
        targets = (y + 1.0) / 2.0
        alpha = scipy.linalg.cho_solve((L_S, True), targets, check_finite=False)
        V = scipy.linalg.solve_triangular(L_S, K_SE, lower=True, check_finite=False)
        # the evidence of the 0/1 targets under N(0, K_SS): a Gaussian density, not a volume
        log_evidence = (-0.5 * float(targets @ alpha) - float(np.sum(np.log(np.diag(L_S))))
                        - 0.5 * n_S * math.log(2 * math.pi))
        return Predictive(posterior, K_SE.T @ alpha, _symmetric(K_EE - V.T @ V), 0.5, 0.0,
                          log_evidence / LN10, True)
    likelihood = "step" if posterior == "ep-orthant" else "probit"
    fit = run_ep(K_SS, y, likelihood=likelihood, tol=tol)
    # R&W (2006) eqs. 3.60-3.61 with B = I + S^1/2 K S^1/2, S the site precisions
    sq = np.sqrt(fit.site_precision)
    B = sq[:, None] * K_SS * sq[None, :]
    B.flat[:: n_S + 1] += 1.0
    L = scipy.linalg.cholesky(B, lower=True, overwrite_a=True, check_finite=False)
    nu = fit.site_natural_mean
    z = sq * scipy.linalg.cho_solve((L, True), sq * (K_SS @ nu), check_finite=False)
    V = scipy.linalg.solve_triangular(L, sq[:, None] * K_SE, lower=True, check_finite=False)
    return Predictive(posterior, K_SE.T @ (nu - z), _symmetric(K_EE - V.T @ V), 0.0,
                      fit.noise_var if likelihood == "probit" else 0.0,
                      fit.log_marginal_likelihood / LN10, bool(fit.converged))


def _symmetric(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)
