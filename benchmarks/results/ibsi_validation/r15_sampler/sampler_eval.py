"""Scratch: evaluate-paired with another ODE time grid / solver at the same velocity calls.

$GRID: uniform | data<p> (t = 1 - (1 - u)^p, small steps near the data) | noise<p> (t = u^p)
$SOLVER: euler | heun (2 calls a step, the last step Euler; --steps counts velocity calls)
"""
import os, sys
import torch
import tumorgen.synthesis.generate as g
from tumorgen.flow import interpolate

GRID = os.environ.get("GRID", "uniform")
SOLVER = os.environ.get("SOLVER", "euler")

def grid(n):
    u = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    if GRID == "uniform":
        return u
    if GRID.startswith("data"):
        return 1 - (1 - u) ** float(GRID[4:])
    if GRID.startswith("noise"):
        return u ** float(GRID[5:])
    raise SystemExit(GRID)

def sample(velocity_fn, noise, *, cond, steps, known=None, keep=None):
    batch = noise.shape[0]
    k = known.shape[1] if known is not None else 0
    n = steps if SOLVER == "euler" else (steps + 1) // 2
    ts = grid(n).tolist()
    x = noise
    def reset(x, t_next):
        if known is None:
            return x
        tt = torch.full((batch,), t_next, dtype=noise.dtype)
        path = interpolate(noise[:, :k], known, tt)
        return torch.cat([keep * path + (1 - keep) * x[:, :k], x[:, k:]], dim=1)
    calls = 0
    for i in range(n):
        t0, t1 = ts[i], ts[i + 1]
        tt0 = torch.full((batch,), t0, dtype=noise.dtype)
        v0 = velocity_fn(torch.cat([x, cond], 1), tt0); calls += 1
        xe = x + (t1 - t0) * v0
        if SOLVER == "heun" and i < n - 1:
            xe = reset(xe, t1)
            v1 = velocity_fn(torch.cat([xe, cond], 1), torch.full((batch,), t1, dtype=noise.dtype)); calls += 1
            xe = x + (t1 - t0) * 0.5 * (v0 + v1)
        x = reset(xe, t1)
    return x

g.euler_sample = sample
from tumorgen.cli import main
sys.exit(main(sys.argv[1:]))
