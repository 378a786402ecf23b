"""Without torch (the runtime-only install), loading a config and a tokenizer through our
loader prints nothing from transformers about the missing PyTorch."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

# torch made unimportable, as in a venv without it: transformers' find_spec sees no torch.
SCRIPT = """
import sys
sys.modules["torch"] = None
from soo_jax.models.loader import load_config, load_tokenizer
import transformers
assert not transformers.is_torch_available()
load_config(sys.argv[1])
load_tokenizer(sys.argv[1])
print("loaded")
"""


def test_no_pytorch_not_found_line_without_torch(tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_dir)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "loaded"
    assert "PyTorch was not found" not in proc.stderr, proc.stderr
