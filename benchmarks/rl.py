"""Physical-deception environment throughput, and the wall time of the 8-seed RL experiment.

    python benchmarks/rl.py [--envs 1,16,256,4096] [--steps 1000] [--experiment runs/rl_deception]

Steps per second of our jitted gymnax environment (`soo_jax.rl.env.PhysicalDeception`), one
environment and `jax.vmap` over 1..4096 environments, each timed as a `lax.scan` over `--steps`
steps with uniform random actions (auto-reset included, as in training), compiled before
timing. The comparison is the authors' way of stepping this world: a NumPy environment stepped
one agent, one wall at a time in a Python loop (the independent reference
`tests/rl/numpy_reference.py`, which the parity tests check against ours), timed in the same
run. A loop steps environments one after another, so its rate does not grow with their number.

With `--experiment`, also reads each finished stage's `done.json` of a `launch/rl.py` run
(8 seeds vmapped in one compiled function) and prints its wall time and device.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "rl"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.loadavg import load_average, load_line  # noqa: E402
from soo_jax.rl.env import PhysicalDeception  # noqa: E402


def jax_steps_per_second(n_envs: int, n_steps: int, repeats: int = 3) -> float:
    env = PhysicalDeception()
    params = env.default_params

    def rollout(key):
        keys = jax.random.split(key, n_envs)
        _, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

        def one_step(carry, step_key):
            states, total = carry
            k_action, k_step = jax.random.split(step_key)
            actions = jax.random.uniform(k_action, (n_envs, 2, 2), minval=-1.0, maxval=1.0)
            # gymnax 1.0 `step`: (obs, state, reward, terminated, truncated, info), auto-reset.
            _, states, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, n_envs), states, actions, params)
            return (states, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(one_step, (states, jnp.zeros(())), jax.random.split(key, n_steps))
        return total

    run = jax.jit(rollout)
    run(jax.random.PRNGKey(0)).block_until_ready()  # compile
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        run(jax.random.PRNGKey(r + 1)).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return n_envs * n_steps / best


def numpy_steps_per_second(n_steps: int, episode_length: int = 50) -> float:
    import numpy_reference as ref

    rng = np.random.default_rng(0)

    def fresh_state():
        adversary = rng.uniform(-0.825, 0.825, 2)
        blue = np.clip(adversary + rng.uniform(-0.08, 0.08, 2), -0.825, 0.825)
        return ref.State(pos=np.stack([adversary, blue]), vel=np.zeros((2, 2)),
                         landmarks=rng.uniform(-0.825, 0.825, (2, 2)), goal=int(rng.integers(2)),
                         trapped=False, prev_pos=np.zeros(2))

    state = fresh_state()
    start = time.perf_counter()
    for t in range(n_steps):
        if t % episode_length == 0:
            state = fresh_state()
        ref.step(state, rng.uniform(-1, 1, (2, 2)))
    return n_steps / (time.perf_counter() - start)


def experiment_rows(workdir: pathlib.Path) -> list[dict]:
    rows = []
    for done in sorted(workdir.glob("*/done.json")):
        info = json.loads(done.read_text())
        rows.append({"stage": info["stage"], "episodes": info["episodes"], "seeds": len(info["seeds"]),
                     "wall_s": info["wall_time_s"], "device": info["device"]})
    evaluation = workdir / "evaluate" / "results.json"
    if evaluation.is_file():
        wall = json.loads(evaluation.read_text()).get("evaluate_wall_time_s")
        if wall is not None:
            rows.append({"stage": "evaluate", "episodes": None, "seeds": None, "wall_s": wall,
                         "device": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="1,16,256,4096", help="comma-separated vmapped env counts")
    parser.add_argument("--steps", type=int, default=1000, help="steps per env per timed rollout")
    parser.add_argument("--numpy-steps", type=int, default=20_000, help="steps of the NumPy loop")
    parser.add_argument("--experiment", default="", help="a launch/rl.py workdir to report")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()
    load_at_start = load_average()  # before we add our own threads

    device = jax.devices()[0]
    device_name = f"{device.platform}: {getattr(device, 'device_kind', '')}".strip()
    print(f"# {datetime.date.today()} | {device_name} | host {platform.processor() or platform.machine()} | "
          f"jax {jax.__version__}", flush=True)

    numpy_rate = numpy_steps_per_second(args.numpy_steps)
    rows = [{"implementation": "NumPy loop (authors' style), 1 env", "envs": 1, "steps_per_s": numpy_rate}]
    for n_envs in [int(n) for n in args.envs.split(",") if n.strip()]:
        rate = jax_steps_per_second(n_envs, args.steps)
        rows.append({"implementation": "soo-jax, jit + vmap", "envs": n_envs, "steps_per_s": rate})

    print("| device | implementation | envs | env steps/s | vs NumPy loop |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {device_name} | {row['implementation']} | {row['envs']} | {row['steps_per_s']:,.0f} | "
              f"{row['steps_per_s'] / numpy_rate:,.1f}x |")
    print(load_line(load_at_start, load_average()))

    stages = experiment_rows(pathlib.Path(args.experiment)) if args.experiment else []
    if stages:
        print("\n| stage | episodes x seeds | wall time (min) | device |")
        print("|---|---|---:|---|")
        for s in stages:
            size = f"{s['episodes']:,} x {s['seeds']}" if s["episodes"] else "–"
            print(f"| {s['stage']} | {size} | {s['wall_s'] / 60:.1f} | {s['device'] or '–'} |")
        print(f"| total | | {sum(s['wall_s'] for s in stages) / 60:.1f} | |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"env": rows, "experiment": stages,
                                                       "device": device_name}, indent=2))


if __name__ == "__main__":
    main()
