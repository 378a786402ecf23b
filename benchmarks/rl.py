"""Physical-deception environment throughput, and the wall time of the 8-seed RL experiment.

    python -m benchmarks.rl [--envs 1,16,256,4096] [--steps 1000] [--experiment runs/rl_deception]

Steps per second of our jitted gymnax environment (`soo_jax.rl.env.PhysicalDeception`), one
environment and `jax.vmap` over 1..4096 environments, each timed as a `lax.scan` over `--steps`
steps with uniform random actions (auto-reset included, as in training), compiled before
timing. The comparison is the authors' way of stepping this world: a NumPy environment stepped
one agent, one wall at a time in a Python loop (the independent reference
`benchmarks/rl_reference.py`, which the parity tests check against ours), timed in the same
run. A loop steps environments one after another, so its rate does not grow with their number.

With `--experiment`, also reads each finished stage's `done.json` of a `launch/rl.py` run
(8 seeds vmapped in one compiled function) and prints its wall time and device.

    python -m benchmarks.rl --profile configs/rl_deception.py [--profile-episodes 100]

profiles one training chunk of a baseline stage of that config instead (all its seeds vmapped, a
buffer past its first minibatch so that every round updates): the whole compiled chunk, and
separately compiled, on the same state, its env steps (rollout: acting, noise, env, buffer push),
its update rounds, and the buffer sampling inside them; each best of --repeats. Beside them the
update round's FLOPs (XLA's cost analysis of one round, and the dense-layer count from the layer
sizes), the GFLOP/s it achieves, and this machine's measured matmul rate (one 2048^3 f32 GEMM,
and the update's own small shape: seeds x 1024 x 64 @ 64 x 64).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import pathlib
import platform
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

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
    from benchmarks import rl_reference as ref

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


def _best_time(fn, repeats: int, setup=lambda: ()) -> float:
    """Best wall time of `fn(*setup())` over `repeats` calls after one compiling call; `setup`
    (untimed) makes fresh arguments where `fn` donates them."""
    jax.block_until_ready(fn(*setup()))
    best = float("inf")
    for _ in range(repeats):
        args = setup()
        jax.block_until_ready(args)
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def update_round_dense_flops(hyper, n_seeds: int) -> float:
    """Dense-layer FLOPs of one update round (both agents), counted from the layer sizes.

    Per agent update on a batch of B: target policies of both agents and the target critic
    forward; the critic forward and backward (~2x forward); the other agent's policy forward;
    the actor's policy forward and backward, and the critic forward plus its backward to the
    actions (~1x forward). A dense layer is 2 * in * out FLOPs per sample.
    """
    from soo_jax.rl.env import OBS_DIMS  # noqa: PLC0415
    from soo_jax.rl.maddpg.core import CRITIC_IN_DIM  # noqa: PLC0415

    h = hyper.hidden_dim

    def mlp(n_in, n_out):
        return 2 * (n_in * h + h * h + h * n_out)

    policy = [mlp(d, 2) for d in OBS_DIMS]
    critic = mlp(CRITIC_IN_DIM, 1)
    per_sample = 0
    for i in range(len(OBS_DIMS)):
        other = 1 - i
        per_sample += sum(policy) + critic + 3 * critic + policy[other] + 3 * policy[i] + 2 * critic
    return float(per_sample * hyper.batch_size * n_seeds)


def matmul_gflops(shape: tuple[int, int, int], batch: int = 1, repeats: int = 5, inner: int = 1) -> float:
    """f32 (batch, m, k) @ (batch, k, n) GFLOP/s, `inner` products per timed call (a scan, so
    that a small product is not timed by its dispatch)."""
    m, k, n = shape
    a = jax.random.normal(jax.random.PRNGKey(0), (batch, m, k))
    b = jax.random.normal(jax.random.PRNGKey(1), (batch, k, n))

    @jax.jit
    def run(a, b):
        def body(acc, _):
            return acc + jnp.einsum("bmk,bkn->bmn", a + acc[:, :1, :1], b)[:, :1, :1], None
        acc, _ = jax.lax.scan(body, jnp.zeros((batch, 1, 1)), None, length=inner)
        return acc

    t = _best_time(run, repeats, lambda: (a, b))
    return 2.0 * batch * m * k * n * inner / t / 1e9


def _load_config(path: str):
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def profile_chunk(config_path: str, episodes: int | None, repeats: int) -> dict:
    """Times one baseline training chunk of `config_path` and its parts (see the module doc)."""
    from soo_jax.rl import config as config_lib  # noqa: PLC0415
    from soo_jax.rl.maddpg.buffer import sample  # noqa: PLC0415
    from soo_jax.rl.maddpg.core import update_round  # noqa: PLC0415
    from soo_jax.rl.maddpg.train import (  # noqa: PLC0415
        init_train_state, make_env_step, make_train_chunk, unalias)
    from soo_jax.rl.stages import stage_keys  # noqa: PLC0415

    config = _load_config(config_path)
    hyper = config_lib.maddpg_hyper(config)
    params = config_lib.env_params(config, "deceptive")
    n_episodes = episodes or config.chunk_episodes
    n_seeds = len(config.seeds)
    n_steps = n_episodes * hyper.episode_length
    n_rounds = n_steps // hyper.steps_per_update
    # A chunk that starts once the buffer holds a minibatch, so every round of it updates.
    first_step = n_steps * -(-hyper.batch_size // n_steps)
    population = jnp.int32(min(first_step + n_steps, hyper.buffer_size))
    init = jax.jit(jax.vmap(lambda k: init_train_state(k, hyper, params)))
    state = init(stage_keys(config.seeds, "deceptive"))
    fresh = lambda: (unalias(state),)  # noqa: E731  (the timed functions donate their input)

    chunk = make_train_chunk(hyper, n_episodes, None)
    t_chunk = _best_time(lambda st: chunk(st, jnp.int32(first_step), params), repeats, fresh)

    env_step = make_env_step(hyper)

    def rollout(st):
        steps = first_step + jnp.arange(n_steps, dtype=jnp.int32)
        carry, _ = jax.lax.scan(functools.partial(env_step, params), (st.agents, st.buffer, st.rollout),
                                (steps, jax.random.split(st.key, n_steps)))
        return carry, st.key  # all of the donated state

    rollout = jax.jit(jax.vmap(rollout), donate_argnums=0)
    t_rollout = _best_time(rollout, repeats, fresh)

    def one_round(agents, buffer, key):
        return update_round(hyper, agents, buffer, key, population)[0]

    def rounds(st):
        def body(agents, key):
            return one_round(agents, st.buffer, key), None
        agents, _ = jax.lax.scan(body, st.agents, jax.random.split(st.key, n_rounds))
        return agents

    rounds_fn = jax.jit(jax.vmap(rounds))
    t_rounds = _best_time(rounds_fn, repeats, lambda: (state,))

    def sampling(st):
        def body(total, key):
            keys = jax.random.split(key, 3)
            batches = [sample(st.buffer, keys[i], population, hyper.batch_size) for i in range(2)]
            return total + sum(b.obs.sum() + b.rewards.sum() + b.actions.sum() + b.next_obs.sum()
                               for b in batches), None
        total, _ = jax.lax.scan(body, jnp.zeros(()), jax.random.split(st.key, n_rounds))
        return total

    t_sampling = _best_time(jax.jit(jax.vmap(sampling)), repeats, lambda: (state,))

    one = jax.jit(jax.vmap(one_round)).lower(state.agents, state.buffer, jax.vmap(jax.random.split)(state.key)[:, 0])
    xla_flops = float(one.compile().cost_analysis().get("flops", float("nan")))
    dense_flops = update_round_dense_flops(hyper, n_seeds)
    per_round = t_rounds / n_rounds
    return {
        "config": config_path, "seeds": n_seeds, "episodes": n_episodes, "env_steps": n_steps,
        "update_rounds": n_rounds, "batch_size": hyper.batch_size, "hidden_dim": hyper.hidden_dim,
        "chunk_s": t_chunk, "rollout_s": t_rollout, "update_rounds_s": t_rounds, "sampling_s": t_sampling,
        "rest_s": t_chunk - t_rollout - t_rounds, "update_round_ms": 1e3 * per_round,
        "update_round_xla_gflop": xla_flops / 1e9, "update_round_dense_gflop": dense_flops / 1e9,
        "update_round_gflops_xla": xla_flops / per_round / 1e9,
        "update_round_gflops_dense": dense_flops / per_round / 1e9,
        "matmul_gflops_2048": matmul_gflops((2048, 2048, 2048)),
        "matmul_gflops_update_shape": matmul_gflops((hyper.batch_size, hyper.hidden_dim, hyper.hidden_dim),
                                                    batch=n_seeds, inner=50),
    }


def print_profile(p: dict, device_name: str) -> None:
    print(f"One training chunk of {p['config']} (baseline stage): {p['seeds']} seeds vmapped, {p['episodes']} "
          f"episodes = {p['env_steps']:,} env steps and {p['update_rounds']} update rounds per seed "
          f"(batch {p['batch_size']}, hidden {p['hidden_dim']}); best of the repeats, compiled before timing.")
    print("| device | part | s per chunk | ms per segment (steps_per_update steps + 1 round) | share |")
    print("|---|---|---:|---:|---:|")
    rows = [("whole chunk (one compiled scan)", p["chunk_s"]),
            ("rollout: env steps, acting, noise, buffer push", p["rollout_s"]),
            ("update rounds (sampling included)", p["update_rounds_s"]),
            ("- of which buffer sampling (2 minibatches per round)", p["sampling_s"]),
            ("rest (chunk - rollout - update rounds)", p["rest_s"])]
    for name, t in rows:
        print(f"| {device_name} | {name} | {t:.3f} | {1e3 * t / p['update_rounds']:.1f} | "
              f"{100 * t / p['chunk_s']:.0f}% |")
    print()
    print("| device | update round | GFLOP per round | GFLOP/s achieved |")
    print("|---|---|---:|---:|")
    print(f"| {device_name} | XLA cost analysis | {p['update_round_xla_gflop']:.2f} | "
          f"{p['update_round_gflops_xla']:.1f} |")
    print(f"| {device_name} | dense layers (from layer sizes) | {p['update_round_dense_gflop']:.2f} | "
          f"{p['update_round_gflops_dense']:.1f} |")
    print(f"| {device_name} | matmul, 2048x2048x2048 f32 | – | {p['matmul_gflops_2048']:.1f} |")
    print(f"| {device_name} | matmul, {p['seeds']} x {p['batch_size']}x{p['hidden_dim']} @ "
          f"{p['hidden_dim']}x{p['hidden_dim']} f32 | – | {p['matmul_gflops_update_shape']:.1f} |")


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
    parser.add_argument("--profile", default="", help="profile one training chunk of this config instead")
    parser.add_argument("--profile-episodes", type=int, default=0, help="episodes of the profiled chunk "
                        "(default: the config's chunk_episodes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each profiled part")
    args = parser.parse_args()
    load_at_start = load_average()  # before we add our own threads

    device = jax.devices()[0]
    device_name = f"{device.platform}: {getattr(device, 'device_kind', '')}".strip()
    print(f"# {datetime.date.today()} | {device_name} | host {platform.processor() or platform.machine()} | "
          f"jax {jax.__version__}", flush=True)
    if args.profile:
        profile = profile_chunk(args.profile, args.profile_episodes or None, args.repeats)
        print_profile(profile, device_name)
        print(load_line(load_at_start, load_average()))
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"profile": profile, "device": device_name,
                                                           "load_at_start": load_at_start}, indent=2))
        return

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
