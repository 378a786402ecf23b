"""The soo_jax package's imports: no circle, and the LLM stack's layers point one way
(data -> models -> lora -> soo -> train -> eval -> experiments). Module-level and function-level
imports both count (a lazy import inside a function hides an arrow from the interpreter, not
from a reader)."""

import ast
import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "soo_jax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: pathlib.Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file (`from a import b` is an
    edge to a.b where that is a module, else to a)."""
    files = {_module_name(p): p for p in package_dir.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_the_rl_modules():
    graph = import_graph()
    assert "soo_jax.rl.config" in graph["soo_jax.rl.evaluate"]
    assert "soo_jax.run_dir" in graph["soo_jax.rl.factorial"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_find_cycle_finds_function_level_circles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The LLM stack, lowest first. soo_jax.lora and soo_jax.peft_io form the lora layer; sharding,
# run_dir and cli sit below every layer; rl is its own stack beside them.
LAYERS = ("data", "models", "lora", "soo", "train", "eval", "experiments")
LAYER_OF_MODULE = {"peft_io": "lora"}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    name = LAYER_OF_MODULE.get(parts[1], parts[1])
    return name if name in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import from a lower layer into a higher one."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer(a) and layer(b) and LAYERS.index(layer(b)) > LAYERS.index(layer(a)))


def test_layers_point_one_way():
    graph = import_graph()
    assert graph["soo_jax.train.step"] >= {"soo_jax.soo", "soo_jax.lora"}  # the graph sees them
    assert upward_imports(graph) == []


def test_upward_imports_are_found():
    graph = {"soo_jax.train.config": {"soo_jax.eval.config"}, "soo_jax.peft_io": {"soo_jax.models.config"},
             "soo_jax.soo": {"soo_jax.peft_io"}, "soo_jax.rl.env": {"soo_jax.experiments.sweep"}}
    assert upward_imports(graph) == ["soo_jax.train.config -> soo_jax.eval.config"]


def test_the_maddpg_algorithm_knows_nothing_of_the_experiment():
    """soo_jax.rl.maddpg imports only itself and the environment: the SOO step reaches it as a
    hook (`extra_actor_step`), so the algorithm does not depend on what the experiment adds."""
    graph = import_graph()
    allowed = {"soo_jax.rl.env", "soo_jax.checks"}  # (checks: the valid ranges' helpers, importing nothing)
    assert graph["soo_jax.checks"] == set()
    for module, edges in graph.items():
        if module.startswith("soo_jax.rl.maddpg"):
            outside = {e for e in edges if not e.startswith("soo_jax.rl.maddpg") and e not in allowed}
            assert not outside, (module, outside)
