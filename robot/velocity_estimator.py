"""Base linear velocity from proprioception: a small MLP, numpy inference.

The real Go2 has no base velocity sensor; tracking metrics on the robot (and anywhere
without ground truth) use this estimate instead. Trained offline on simulated data with
privileged velocity (``python -m export.train_velocity``); this module only runs it.

Input, per 50 Hz step (``FEATURE_NAMES``, 33 values, SDK joint order): IMU gyroscope
(rad/s), projected gravity (from the IMU quaternion), IMU accelerometer (m/s^2), joint
positions minus the default pose (rad), joint velocities (rad/s). The network sees the
last ``history`` steps, newest first, concatenated (at an episode start the first step is
repeated). Output: base linear velocity in the body frame [vx, vy, vz] (m/s).

The .npz holds the weights (``W0, b0, W1, b1, ...``), the input/output normalizers
(``x_mean, x_std, y_mean, y_std``) and ``spec`` (a JSON string: feature names, history,
dt, activation, output names, training metrics), checked on load.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np

from robot.go2_constants import DEFAULT_JOINT_POS, JOINT_NAMES
from robot.observation import projected_gravity
from robot.types import LowState

SPEC_VERSION = 1
FEATURE_NAMES: tuple[str, ...] = (
    ("gyro_x", "gyro_y", "gyro_z", "gravity_x", "gravity_y", "gravity_z", "acc_x", "acc_y", "acc_z")
    + tuple(f"q_rel_{n}" for n in JOINT_NAMES) + tuple(f"dq_{n}" for n in JOINT_NAMES))
OUTPUT_NAMES = ("vx", "vy", "vz")
ACTIVATIONS = ("elu", "tanh", "relu")


def step_features(state: LowState) -> np.ndarray:
    """One step's features (float64, len 33) from a robot state."""
    return np.concatenate([np.asarray(state.gyroscope, np.float64), projected_gravity(state.quaternion),
                           np.asarray(state.accelerometer, np.float64),
                           np.asarray(state.q, np.float64) - DEFAULT_JOINT_POS,
                           np.asarray(state.dq, np.float64)])


def features_from_raw(raw: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 33] features from a dataset's raw/ fields (quaternion, gyroscope, accelerometer,
    q, dq). Raises ValueError naming a missing field."""
    need = ("quaternion", "gyroscope", "accelerometer", "q", "dq")
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"dataset raw/ lacks {missing} (has {sorted(raw)})")
    quat = np.asarray(raw["quaternion"], np.float64)
    w, x, y, z = quat.T
    n = np.maximum(np.sum(quat * quat, axis=1), 1e-12)
    s = 2.0 / n
    grav = np.stack([-s * (x * z - w * y), -s * (y * z + w * x), -(1.0 - s * (x * x + y * y))], 1)
    return np.concatenate([raw["gyroscope"], grav, raw["accelerometer"],
                           np.asarray(raw["q"], np.float64) - DEFAULT_JOINT_POS, raw["dq"]], axis=1)


def history_windows(feats: np.ndarray, bounds: np.ndarray, history: int) -> np.ndarray:
    """[N, history * F]: for each sample, its features and the previous history-1 steps of
    the same episode, newest first; steps before the episode start repeat its first step."""
    n, f = feats.shape
    out = np.empty((n, history * f), dtype=np.float32)
    for s, e in bounds:
        idx = np.arange(s, e)
        for h in range(history):
            out[s:e, h * f:(h + 1) * f] = feats[np.maximum(idx - h, s)]
    return out


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    if name == "tanh":
        return np.tanh(x)
    return np.maximum(x, 0)


class VelocityEstimator:
    """Load once, then ``update(state)`` at the spec's dt (50 Hz) -> [vx, vy, vz]."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        self.path = p
        if not p.is_file():
            raise FileNotFoundError(f"velocity estimator weights not found: {p}")
        with np.load(p, allow_pickle=False) as z:
            try:
                self.spec = json.loads(str(z["spec"]))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{p}: no valid 'spec' entry ({exc})") from exc
            if self.spec.get("version") != SPEC_VERSION:
                raise ValueError(f"{p}: spec version {self.spec.get('version')} != {SPEC_VERSION}")
            if list(self.spec.get("features", [])) != list(FEATURE_NAMES):
                raise ValueError(f"{p}: input features differ from robot.velocity_estimator.FEATURE_NAMES")
            if self.spec.get("activation") not in ACTIVATIONS:
                raise ValueError(f"{p}: unknown activation {self.spec.get('activation')!r}")
            n_layers = int(self.spec["layers"])
            self.W = [np.asarray(z[f"W{i}"], np.float64) for i in range(n_layers)]
            self.b = [np.asarray(z[f"b{i}"], np.float64) for i in range(n_layers)]
            self.x_mean, self.x_std = np.asarray(z["x_mean"], np.float64), np.asarray(z["x_std"], np.float64)
            self.y_mean, self.y_std = np.asarray(z["y_mean"], np.float64), np.asarray(z["y_std"], np.float64)
        self.history = int(self.spec["history"])
        self.dt = float(self.spec["dt"])
        d_in = self.history * len(FEATURE_NAMES)
        if self.W[0].shape[0] != d_in or self.x_mean.shape != (d_in,):
            raise ValueError(f"{p}: first layer takes {self.W[0].shape[0]} inputs, spec says {d_in}")
        if self.W[-1].shape[1] != len(OUTPUT_NAMES):
            raise ValueError(f"{p}: output size {self.W[-1].shape[1]} != {len(OUTPUT_NAMES)}")
        self._buf: deque[np.ndarray] = deque(maxlen=self.history)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[N, history*F] (or one row) windows -> [N, 3] velocities."""
        h = (np.atleast_2d(np.asarray(x, np.float64)) - self.x_mean) / self.x_std
        for i, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            h = h @ W + b
            if i < len(self.W) - 1:
                h = _act(self.spec["activation"], h)
        return h * self.y_std + self.y_mean

    def reset(self) -> None:
        self._buf.clear()

    def update(self, state: LowState) -> np.ndarray:
        """Push one step (call every ``dt``) and return the current estimate [vx, vy, vz]."""
        f = step_features(state)
        if not self._buf:
            self._buf.extend([f] * self.history)
        else:
            self._buf.append(f)
        window = np.concatenate(list(reversed(self._buf)))  # newest first
        return self.predict(window)[0]


def save(path: str | Path, weights: list[tuple[np.ndarray, np.ndarray]], x_mean: np.ndarray,
         x_std: np.ndarray, y_mean: np.ndarray, y_std: np.ndarray, *, history: int, dt: float,
         activation: str, extra: dict | None = None) -> Path:
    """Write the estimator .npz (weights as [in, out] matrices)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    spec = {"version": SPEC_VERSION, "features": list(FEATURE_NAMES), "outputs": list(OUTPUT_NAMES),
            "history": int(history), "dt": float(dt), "activation": activation,
            "layers": len(weights), "order": "newest step first", **(extra or {})}
    arrays = {"spec": np.array(json.dumps(spec)), "x_mean": x_mean, "x_std": x_std,
              "y_mean": y_mean, "y_std": y_std}
    for i, (W, b) in enumerate(weights):
        arrays[f"W{i}"] = np.asarray(W, np.float32)
        arrays[f"b{i}"] = np.asarray(b, np.float32)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, allow_pickle=False, **arrays)  # no pickle: numbers and one string (load refuses pickle too)
    return p
