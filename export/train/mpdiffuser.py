"""MPDiffuser's trainers: planner, dynamics and ranker (three networks, trained separately).

planner   eps^pl(tau^k | k, x_0, y): prediction MSE over all channels of [x_{1:H}, u_{0:H-1}],
          the first action's channels (row 0, u_0) weighted ``first_action_weight`` (10),
          y dropped with p = ``cond_dropout`` (0.25) for CFG, x_0 never dropped.
dynamics  eps^dyn(x^k | u^k, k, x_0, y): the whole window is noised to one level k (states
          and actions with independent noise); the network sees both and predicts the
          states' noise only; loss over the state channels; same condition dropout.
ranker    r_hat(x_t, u_t, y), c_hat(x_t, u_t, y): MSE to the dataset's per-step reward and
          cost on the training split's samples (normalized inputs, raw targets).
forecaster  x_{t+1} = f(x_t, u_t) (export/models/forecaster.py), for real-time chunking: rolled
          over ``forecast_steps`` (4) steps of each training window from its x_0 with the
          recorded actions, MSE to the recorded states (normalized units) over the valid
          steps. Optional: an engine built without it holds a committed prefix by inpainting.
The planner and dynamics networks predict the noise (``prediction = "eps"``, default) or the
clean trajectory (``"x0"``; the checkpoint records which and ``build_model`` converts to eps
for the samplers, see ``sampling/common.EpsFromX0``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from export.data import WindowData
from export.sampling.mpdiffuser import RankerNet
from export.train.config import ComponentConfig
from export.train.diffusion import DiffusionTask, draw_cond_drop
from export.train.loop import TrainTask


class PlannerTask(DiffusionTask):
    component = "planner"
    supports_x0 = True

    def loss_weights(self) -> torch.Tensor:
        d = self.data
        w = torch.ones(d.H, d.D)
        w[0, d.S:] = self.cfg.first_action_weight
        return w

    def loss(self, model, batch, gen):
        traj = batch["traj"]
        tau_k, k, eps = self.noised(traj, gen)
        drop = draw_cond_drop(traj.shape[0], self.cfg.cond_dropout, gen)
        pred = model(tau_k, k.to(torch.float32), batch["x0"], batch["cond"], drop)
        err = (pred - self.target(traj, eps)) ** 2
        loss = (err * self.loss_weights()).mean()
        return loss, {"first_action_mse": float(err[:, 0, self.data.S:].mean().detach())}


class DynamicsTask(DiffusionTask):
    component = "dynamics"
    out_states_only = True
    supports_x0 = True

    def loss(self, model, batch, gen):
        traj = batch["traj"]
        tau_k, k, eps = self.noised(traj, gen)
        drop = draw_cond_drop(traj.shape[0], self.cfg.cond_dropout, gen)
        pred = model(tau_k, k.to(torch.float32), batch["x0"], batch["cond"], drop)
        loss = ((pred - self.target(traj, eps)[..., : self.data.S]) ** 2).mean()
        return loss, {}


class RankerTask(TrainTask):
    component = "ranker"
    model_class = "RankerNet"

    def __init__(self, cfg: ComponentConfig, data: WindowData):
        super().__init__(cfg, data)
        self._split = {}
        for name, s in (("train", data.train_samples), ("val", data.val_samples)):
            if not s:
                continue
            rows = data.norms.traj.normalize(np.concatenate([s["observations"], s["actions"]], 1))
            self._split[name] = {"x": rows[:, : data.S], "u": rows[:, data.S:],
                                 "y": data.norms.cond.normalize(s["conditions"]),
                                 "r": s["rewards"].astype(np.float32),
                                 "c": s["costs"].astype(np.float32)}

    def build_model(self) -> nn.Module:
        d = self.data
        m = self.cfg.model
        return RankerNet(d.S, d.A, d.C, hidden=m.hidden or (128, 128), act=m.act)

    def has_val(self) -> bool:
        return "val" in self._split

    def batch(self, split, batch_size, rng):
        s = self._split[split]
        i = rng.integers(0, len(s["r"]), size=batch_size)
        return {k: torch.from_numpy(v[i]) for k, v in s.items()}

    def loss(self, model, batch, gen):
        r, c = model(batch["x"], batch["u"], batch["y"])
        lr, lc = ((r - batch["r"]) ** 2).mean(), ((c - batch["c"]) ** 2).mean()
        return lr + lc, {"reward_mse": float(lr.detach()), "cost_mse": float(lc.detach())}


class ForecasterTask(TrainTask):
    component = "forecaster"
    model_class = "ForecasterNet"

    def __init__(self, cfg: ComponentConfig, data: WindowData):
        super().__init__(cfg, data)
        self.steps = cfg.forecast_steps
        if not 1 <= self.steps <= data.H:
            raise ValueError(f"forecast_steps must be in [1, H={data.H}], got {self.steps}")
        if cfg.model.step_scale is not None:  # given (a fine-tune: the checkpoint's)
            if len(cfg.model.step_scale) != data.S:
                raise ValueError(f"model.step_scale needs {data.S} values, got {len(cfg.model.step_scale)}")
            self.step_scale = list(cfg.model.step_scale)
            return
        rng = np.random.default_rng(cfg.seed)
        b = data.train.sample(min(20000, max(1, len(data.train))), rng)
        d = b["traj"][:, 0, : data.S] - b["x0"]  # one-step changes, normalized units
        self.step_scale = np.maximum(d[b["valid"][:, 0] > 0].std(0), 1e-4).tolist()

    def build_model(self) -> nn.Module:
        from export.models.forecaster import ForecasterNet

        m = self.cfg.model
        return ForecasterNet(self.data.S, self.data.A, self.step_scale,
                             hidden=m.hidden or (256, 256), act=m.act)

    def has_val(self) -> bool:
        return len(self.data.val) > 0

    def batch(self, split, batch_size, rng):
        from export.train.diffusion import to_tensors

        ws = self.data.train if split == "train" else self.data.val
        return to_tensors(ws.sample(batch_size, rng))

    def loss(self, model, batch, gen):
        S = self.data.S
        x, traj, valid = batch["x0"], batch["traj"], batch["valid"]
        total, per = 0.0, []
        for k in range(self.steps):
            x = model(x, traj[:, k, S:])
            err = ((x - traj[:, k, :S]) ** 2).mean(-1) * valid[:, k]
            e = err.sum() / valid[:, k].sum().clamp(min=1.0)
            per.append(float(e.detach()))
            total = total + e
        return total / self.steps, {f"mse_step{k + 1}": v for k, v in enumerate(per)}


def tasks(cfg_for: Any, data: WindowData) -> list[TrainTask]:
    """The method's components in training order; ``cfg_for(name)`` gives each its config."""
    return [PlannerTask(cfg_for("planner"), data), DynamicsTask(cfg_for("dynamics"), data),
            RankerTask(cfg_for("ranker"), data), ForecasterTask(cfg_for("forecaster"), data)]
