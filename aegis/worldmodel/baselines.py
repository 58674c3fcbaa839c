"""The baselines a world model must beat to be worth anything.

Persistence (next bucket = last bucket) is what an operator assumes without a
model; ridge regression on the same flattened features is what a model gets
without depth. Both produce calibrated 90% intervals from the validation split,
so coverage compares like with like.
"""

from __future__ import annotations

import numpy as np

from aegis.worldmodel.dataset import TARGET_KPIS, Windows
from aegis.worldmodel.model import Z90, Normaliser, Prediction

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


class Persistence:
    """next = last, with interval offsets from the validation residual quantiles."""

    kind = "persistence"

    def __init__(self) -> None:
        self.q_low = np.zeros(len(TARGET_KPIS))
        self.q_high = np.zeros(len(TARGET_KPIS))

    def fit(self, train: Windows, val: Windows) -> Persistence:
        resid = val.target - val.last_target
        self.q_low = np.quantile(resid, 0.05, axis=0)
        self.q_high = np.quantile(resid, 0.95, axis=0)
        return self

    def predict(self, w: Windows) -> Prediction:
        last = w.last_target
        return Prediction(mean=last, low=last + self.q_low, high=last + self.q_high)


class Ridge:
    """Linear model on the flattened normalised history and action, in normalised target space."""

    kind = "linear"

    def __init__(self) -> None:
        self.normaliser: Normaliser | None = None
        self.coef: np.ndarray | None = None
        self.alpha = 0.0
        self.sigma = np.ones(len(TARGET_KPIS))

    def _design(self, w: Windows) -> np.ndarray:
        assert self.normaliser is not None
        steps, action, _ = self.normaliser.inputs(w)
        x = np.concatenate([steps.reshape(len(w), -1), action], axis=1).astype(np.float64)
        return np.concatenate([x, np.ones((len(w), 1))], axis=1)

    def fit(self, train: Windows, val: Windows) -> Ridge:
        # Plain symlog, as the baseline was defined; the world model's per-KPI scales are its own.
        self.normaliser = Normaliser.fit(train, scaled=False)
        x, y = self._design(train), self.normaliser.target(train.target).astype(np.float64)
        xv, yv = self._design(val), self.normaliser.target(val.target).astype(np.float64)
        gram, rhs = x.T @ x, x.T @ y
        eye = np.eye(gram.shape[0])
        eye[-1, -1] = 0.0  # the intercept is not shrunk
        best = None
        for alpha in RIDGE_ALPHAS:
            coef = np.linalg.solve(gram + alpha * len(x) * 1e-3 * eye, rhs)
            err = float(np.mean(np.abs(xv @ coef - yv)))
            if best is None or err < best[0]:
                best = (err, alpha, coef)
        assert best is not None
        _, self.alpha, self.coef = best
        resid = np.abs(xv @ self.coef - yv)
        self.sigma = np.maximum(np.quantile(resid, 0.9, axis=0) / Z90, 1e-3)
        return self

    def predict(self, w: Windows) -> Prediction:
        assert self.normaliser is not None and self.coef is not None, "fit the ridge baseline first"
        mu = self._design(w) @ self.coef
        n = self.normaliser
        return Prediction(
            mean=n.untarget(mu), low=n.untarget(mu - Z90 * self.sigma), high=n.untarget(mu + Z90 * self.sigma)
        )
