"""The GPU suite: on one H100/H200, in under 8 minutes, the three speed measurements this project
owes a GPU, written to one JSON file.

    benchmarks/gpu_suite.sh --tokenizer DIR [--out gpu_suite.json]
    benchmarks/gpu_suite.sh --tiny [--out FILE]     # the same code paths on a CPU in about a minute

1. train step (benchmarks/train_step.py): Mistral-7B shape, random bf16 weights, SOO at layer 19,
   4 and 16 pairs x 128 tokens, ours vs PyTorch + transformers + PEFT in the same process, MFU
   against the dense bf16 peak.
2. generation (benchmarks/generate.py): the 250-prompt deception evaluation (32 prompts a batch,
   75 new tokens, greedy, chat template) on a Mistral-7B-shaped random bf16 model, ours cold and
   warm vs transformers `generate`, same weights (written once to --work-dir, /dev/shm by default).
3. RL environment throughput (benchmarks/rl.py): vmapped steps/s of the jitted environment.

`--tokenizer DIR` supplies the prompts' tokens and chat template (nothing can be downloaded on
the GPU machine): `python -m benchmarks.gpu_suite --export-tokenizer DIR` writes the embedded
SmolLM2 tokenizer (a few MB) where it can be carried. Each section runs in its own process
with its own time limit; a failing or slow section is recorded (exit status, the tail of its
output) and the next one still runs. The JSON is rewritten after every section, so a suite cut
short keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Seconds per section: 450 in all, inside the 8 minutes with room for the interpreter starts.
BUDGET_S = {"train_step": 180, "generate": 210, "rl": 60}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_collections", "torch", "transformers", "peft",
            "gymnax", "safetensors")


def section_commands(args, tokenizer: str, work_dir: str) -> dict[str, list[str]]:
    """The command line of each section, full size or --tiny."""
    py = [sys.executable]
    out = lambda name: str(pathlib.Path(work_dir) / f"{name}.json")  # noqa: E731
    if args.tiny:
        return {
            "train_step": py + ["-m", "benchmarks.train_step", "--arch", "mistral-tiny", "--dtype", "float32",
                                "--pairs", "1", "2", "--seq-len", "16", "--steps", "1", "--warmup", "1",
                                "--json", out("train_step")],
            "generate": py + ["-m", "benchmarks.generate", "--model", "mistral-tiny-random", "--tokenizer", tokenizer,
                              "--dtype", "float32", "--device", "cpu", "--num-scenarios", "4", "--batch-size", "2",
                              "--max-new-tokens", "3", "--work-dir", work_dir, "--json", out("generate")],
            "rl": py + ["-m", "benchmarks.rl", "--envs", "1,4", "--steps", "20", "--numpy-steps", "50",
                        "--json", out("rl")],
        }
    return {
        "train_step": py + ["-m", "benchmarks.train_step", "--arch", "mistral-7b", "--dtype", "bfloat16",
                            "--pairs", "4", "16", "--seq-len", "128", "--steps", "10", "--warmup", "2",
                            "--json", out("train_step")],
        "generate": py + ["-m", "benchmarks.generate", "--model", "mistral-7b-random", "--tokenizer", tokenizer,
                          "--dtype", "bfloat16", "--device", "cuda", "--num-scenarios", "250", "--batch-size", "32",
                          "--max-new-tokens", "75", "--work-dir", args.work_dir or _fast_dir(), "--json",
                          out("generate")],
        "rl": py + ["-m", "benchmarks.rl", "--envs", "1,256,4096", "--steps", "1000", "--numpy-steps", "20000",
                    "--json", out("rl")],
    }


def _fast_dir() -> str:
    """Where the 14 GB random model is written and read back: memory when there is a tmpfs."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def versions() -> dict:
    from importlib import metadata

    found = {}
    for name in PACKAGES:
        dist = {"orbax.checkpoint": "orbax-checkpoint", "ml_collections": "ml-collections"}.get(name, name)
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpu_description() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_section(name: str, command: list[str], budget_s: int, result_file: pathlib.Path, env: dict) -> dict:
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=budget_s)
        status, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as timeout:
        status = "timeout"
        output = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (timeout.stdout, timeout.stderr))
    wall = time.perf_counter() - started
    record = {"ok": status == 0, "exit": status, "wall_s": round(wall, 1), "budget_s": budget_s,
              "command": " ".join(command[1:]), "output_tail": output[-4000:]}
    if result_file.is_file():
        record["result"] = json.loads(result_file.read_text())
    print(f"{name}: {'ok' if record['ok'] else f'FAILED ({status})'} in {wall:.0f} s", flush=True)
    return record


def write_json(path: pathlib.Path, data: dict) -> None:
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(data, indent=2) + "\n")
    staging.replace(path)


def export_tokenizer(directory: str) -> None:
    from soo_jax.models.loader import load_tokenizer

    load_tokenizer("embedded").save_pretrained(directory)
    print(f"wrote the embedded SmolLM2 tokenizer to {directory}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="tokenizer directory for the generation prompts (default: embedded)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("gpu_suite.json"))
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: checks the suite itself")
    parser.add_argument("--only", nargs="*", choices=list(BUDGET_S), help="run only these sections")
    parser.add_argument("--work-dir", help="where generation writes its random model (default /dev/shm)")
    parser.add_argument("--export-tokenizer", metavar="DIR", help="write the embedded tokenizer to DIR and exit")
    args = parser.parse_args(argv)
    if args.export_tokenizer:
        export_tokenizer(args.export_tokenizer)
        return 0

    suite_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as work_dir:
        tokenizer = args.tokenizer or "embedded"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # JAX and torch share the GPU
        if args.tiny:
            env["JAX_PLATFORMS"] = "cpu"
        report = {"suite": "tiny (CPU check of the suite)" if args.tiny else "gpu",
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "gpu": gpu_description(),
                  "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions(),
                  "load_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "sections": {}}
        write_json(args.out, report)
        commands = section_commands(args, tokenizer, work_dir)
        for name in args.only or list(commands):
            report["sections"][name] = run_section(name, commands[name], BUDGET_S[name],
                                                   pathlib.Path(work_dir) / f"{name}.json", env)
            report["total_wall_s"] = round(time.perf_counter() - suite_start, 1)
            write_json(args.out, report)
    print(f"wrote {args.out} ({report['total_wall_s']} s)")
    return 0 if all(s["ok"] for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
