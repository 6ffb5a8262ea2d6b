"""Train the base-velocity estimator (robot.velocity_estimator) on a simulated dataset.

    python -m export.train_velocity --data data/go2_expert.h5 --out robot/assets/velocity_estimator.npz
    python -m export.train_velocity --data trot.h5 ppo.h5 --out ve.npz     # several gaits

The dataset (planner_runtime.dataset format) must carry raw/ fields quaternion, gyroscope,
accelerometer, q, dq and the privileged raw/base_lin_vel (body frame), as
`planner-runtime collect` writes them. Episodes are split into train / validation (by
episode, seeded); the MLP is trained with Adam on normalized inputs and outputs, and the
validation RMSE (m/s, per axis and over vx, vy) is printed as JSON and stored in the
.npz spec. The numpy inference is checked against torch on the validation set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def build_arrays(path: str, history: int, max_samples: int | None = None):
    from planner_runtime.dataset import load_dataset
    from robot.velocity_estimator import features_from_raw, history_windows

    ds = load_dataset(path, checksum=True)
    if "base_lin_vel" not in ds.raw:
        raise ValueError(f"{path}: raw/base_lin_vel (privileged base velocity) is missing; "
                         f"raw fields: {sorted(ds.raw)}")
    feats = features_from_raw(ds.raw)
    bounds = ds.episode_bounds()
    x = history_windows(feats, bounds, history)
    y = np.asarray(ds.raw["base_lin_vel"], np.float32)
    ep = np.zeros(len(ds), np.int64)
    for i, (s, e) in enumerate(bounds):
        ep[s:e] = i
    if max_samples is not None and len(ds) > max_samples:
        keep_eps = int(np.searchsorted(bounds[:, 1], max_samples, side="right"))
        n = int(bounds[max(keep_eps, 1) - 1, 1])
        x, y, ep, bounds = x[:n], y[:n], ep[:n], bounds[:max(keep_eps, 1)]
    return x, y, ep, len(bounds), float(ds.dt), ds.sha256 or ""


def build_arrays_from(paths: list[str], history: int, max_samples: int | None = None):
    """:func:`build_arrays` over several datasets (e.g. two gaits: datasets of different action
    semantics cannot be one file), episodes numbered across them; their dt must agree.
    ``max_samples`` applies to each file."""
    parts = [build_arrays(p, history, max_samples) for p in paths]
    dts = {round(part[4], 9) for part in parts}
    if len(dts) > 1:
        raise ValueError(f"datasets {paths} have different dt {sorted(dts)}: one estimator runs at one rate")
    offsets = np.cumsum([0] + [part[3] for part in parts[:-1]])
    x = np.concatenate([part[0] for part in parts])
    y = np.concatenate([part[1] for part in parts])
    ep = np.concatenate([part[2] + off for part, off in zip(parts, offsets, strict=True)])
    shas = [part[5] for part in parts]
    return x, y, ep, int(sum(part[3] for part in parts)), parts[0][4], shas[0] if len(shas) == 1 else shas


def train(args: argparse.Namespace) -> dict:
    import torch

    from robot import velocity_estimator as ve

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x, y, ep, n_eps, dt, sha = build_arrays_from(args.data, args.history, args.max_samples)
    if n_eps < 2:
        raise ValueError(f"{args.data}: need at least 2 episodes to split train/validation, got {n_eps}")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n_eps)
    n_val = max(1, int(round(args.val_frac * n_eps)))
    val_eps = set(perm[:n_val].tolist())
    is_val = np.isin(ep, list(val_eps))
    xt, yt, xv, yv = x[~is_val], y[~is_val], x[is_val], y[is_val]
    x_mean, x_std = xt.mean(0), xt.std(0) + 1e-6
    y_mean, y_std = yt.mean(0), yt.std(0) + 1e-6
    Xt = torch.from_numpy((xt - x_mean) / x_std).float()
    Yt = torch.from_numpy((yt - y_mean) / y_std).float()
    Xv = torch.from_numpy((xv - x_mean) / x_std).float()
    act = {"elu": torch.nn.ELU, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[args.activation]
    layers, d = [], Xt.shape[1]
    for h in args.hidden:
        layers += [torch.nn.Linear(d, h), act()]
        d = h
    layers.append(torch.nn.Linear(d, 3))
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    t0 = time.time()
    ys = torch.from_numpy(y_std).float()

    def val_rmse() -> np.ndarray:
        with torch.no_grad():
            pv = net(Xv).numpy() * y_std + y_mean
        return np.sqrt(np.mean((pv - yv) ** 2, axis=0))

    history = []
    for epoch in range(args.epochs):
        net.train()
        idx = torch.randperm(Xt.shape[0])
        for i in range(0, len(idx), args.batch):
            b = idx[i:i + args.batch]
            loss = (((net(Xt[b]) - Yt[b]) * ys) ** 2).mean()  # in (m/s)^2
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        r = val_rmse()
        history.append([epoch + 1, loss.item(), *map(float, r)])
        print(f"epoch {epoch + 1}/{args.epochs} train {loss.item() ** 0.5:.4f} m/s  "
              f"val rmse vx {r[0]:.4f} vy {r[1]:.4f} vz {r[2]:.4f}", file=sys.stderr)
    r = val_rmse()
    weights = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
               for m in net if isinstance(m, torch.nn.Linear)]
    metrics = {"val_rmse": {"vx": float(r[0]), "vy": float(r[1]), "vz": float(r[2]),
                            "xy": float(np.sqrt((r[0] ** 2 + r[1] ** 2) / 2))},
               "val_std": {k: float(v) for k, v in zip("xyz", yv.std(0), strict=True)},
               "train_samples": int(xt.shape[0]), "val_samples": int(xv.shape[0]),
               "val_episodes": n_val, "episodes": n_eps, "epochs": args.epochs,
               "train_seconds": time.time() - t0}
    out = args.out if str(args.out).endswith(".npz") else f"{args.out}.npz"
    ve.save(out, weights, x_mean, x_std, y_mean, y_std, history=args.history, dt=dt,
            activation=args.activation, extra={"metrics": metrics, "hidden": list(args.hidden),
                                               "data": args.data[0] if len(args.data) == 1 else list(args.data),
                                               "data_sha256": sha,
                                               "seed": args.seed})
    # The numpy inference must reproduce torch's.
    est = ve.VelocityEstimator(out)
    with torch.no_grad():
        pt = net(Xv[:2000]).numpy() * y_std + y_mean
    metrics["numpy_vs_torch_max_abs"] = float(np.max(np.abs(est.predict(xv[:2000]) - pt)))
    metrics["out"] = out
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.train_velocity", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, nargs="+",
                   help="dataset(s) .h5 with raw/base_lin_vel (several: e.g. one per gait)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--history", type=int, default=3, help="steps of history (default 3 = 60 ms at 50 Hz)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--activation", choices=("elu", "tanh", "relu"), default="elu")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--max-samples", type=int, default=None, help="use only the first episodes up to this many samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.history < 1 or args.epochs < 1:
        p.error("--history and --epochs must be >= 1")
    try:
        metrics = train(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
