"""Launch files and config, checked statically (`launch` / `launch_ros` are not installable here): every
parameter they pass is one the node declares, every launch argument they use is declared, every file they name
exists, and config/illexp.yaml documents and validates every parameter."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from illexp_ros.launch_arguments import flag, parameter_overrides, typed
from illexp_ros.ros.node.illexp_node import NODE_NAME
from illexp_ros.ros.node.illexp_stereo_node import NODE_NAME as STEREO_NODE_NAME
from illexp_ros.ros.node.parameters import PARAMETERS, STEREO_PARAMETERS, validate

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
LAUNCH_ACTIONS = ROOT / "illexp_ros" / "launch_actions.py"  # what the node launch files share
REQUIRED_ARGS = {"image", "camera_info", "namespace", "params_file", "model", "mode", "backend", "fast"}
ROS_PARAMETERS = {"use_sim_time"}  # every rclpy node has it
# Each of our executables: the node name its params file's key names, and the parameters it declares.
OUR_NODES = {"illexp_node": (NODE_NAME, PARAMETERS), "illexp_lifecycle_node": (NODE_NAME, PARAMETERS),
             "illexp_stereo_node": (STEREO_NODE_NAME, STEREO_PARAMETERS),
             "illexp_stereo_lifecycle_node": (STEREO_NODE_NAME, STEREO_PARAMETERS)}


def tree_of(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or \
                    (isinstance(func, ast.Attribute) and func.attr == name):
                found.append(node)
    return found


def first_str_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def resolved(tree: ast.AST, expr: ast.expr | None) -> ast.expr | None:
    """A name assigned once in the file (e.g. `remappings = [...]`) -> the assigned expression."""
    if isinstance(expr, ast.Name):
        values = [a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                  and any(getattr(t, "id", "") == expr.id for t in a.targets)]
        assert len(values) == 1, f"{expr.id} is assigned {len(values)} times"
        return values[0]
    return expr


def node_calls(tree: ast.AST) -> list[ast.Call]:
    """launch_ros Node and LifecycleNode actions."""
    return calls(tree, "Node") + calls(tree, "LifecycleNode")


def declared_args(tree: ast.AST) -> set[str]:
    return {first_str_arg(c) for c in calls(tree, "DeclareLaunchArgument")} - {None}


def package_paths(tree: ast.AST) -> list[Path]:
    """PathJoinSubstitution([FindPackageShare('illexp_ros'), 'a', 'b']) -> ROOT/a/b."""
    paths = []
    for call in calls(tree, "PathJoinSubstitution"):
        parts = call.args[0].elts if call.args and isinstance(call.args[0], ast.List) else []
        if parts and isinstance(parts[0], ast.Call) and first_str_arg(parts[0]) == "illexp_ros":
            assert all(isinstance(p, ast.Constant) for p in parts[1:]), ast.unparse(call)
            paths.append(ROOT.joinpath(*(p.value for p in parts[1:])))
    return paths


def test_there_are_the_four_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"illexp.launch.py", "camera.launch.py", "bag_replay.launch.py",
                                              "stereo.launch.py"}


def shared_function(name: str) -> ast.FunctionDef:
    return next(f for f in tree_of(LAUNCH_ACTIONS).body if isinstance(f, ast.FunctionDef) and f.name == name)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_used_launch_argument_is_declared(path):
    tree = tree_of(path)
    used = {first_str_arg(c) for c in calls(tree, "LaunchConfiguration")} - {None}
    for name in ("node_parameters", "autostarted"):  # the arguments the shared functions read count as used
        if calls(tree, name):
            used |= {first_str_arg(c) for c in calls(shared_function(name), "LaunchConfiguration")} - {None}
    assert used, "a launch file that reads no argument is suspicious"
    assert used <= declared_args(tree), f"used but not declared: {sorted(used - declared_args(tree))}"
    conditions = {first_str_arg(c) for c in calls(tree, "LaunchConfigurationEquals")} - {None}
    assert conditions <= declared_args(tree)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_named_file_exists(path):
    tree = tree_of(path)
    for named in package_paths(tree):
        assert named.is_file(), f"{path.name} names {named.relative_to(ROOT)}, which does not exist"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_parameters_passed_to_our_node_are_declared_by_it(path):
    tree = tree_of(path)
    setup = (ROOT / "setup.py").read_text()
    declared = set()
    for node in node_calls(tree):
        package = keyword(node, "package")
        if not (isinstance(package, ast.Constant) and package.value == "illexp_ros"):
            continue
        executable = keyword(node, "executable").value
        assert re.search(rf"\b{executable} = illexp_ros\.", setup), f"no console script {executable}"
        name, specs = OUR_NODES[executable]
        assert ast.unparse(keyword(node, "name")) == repr(name), "the params file's key names this node"
        declared |= set(specs)
        params = resolved(tree, keyword(node, "parameters"))
        for d in ast.walk(params):
            if isinstance(d, ast.Dict):
                keys = {k.value for k in d.keys} - ROS_PARAMETERS
                assert keys <= set(specs), f"undeclared parameters {sorted(keys - set(specs))}"
    for assign in ast.walk(tree):
        if isinstance(assign, ast.Assign) and any(getattr(t, "id", "") == "PARAMETER_ARGUMENTS"
                                                   for t in assign.targets):
            names = {k.value for k in assign.value.keys}
            assert names <= declared, f"undeclared parameters {sorted(names - declared)}"
            assert names <= declared_args(tree), "every parameter argument must be a declared launch argument"


def test_illexp_launch_declares_the_documented_arguments():
    tree = tree_of(ROOT / "launch" / "illexp.launch.py")
    assert REQUIRED_ARGS <= declared_args(tree)
    nodes = node_calls(tree)
    assert {ast.unparse(keyword(c, "executable")) for c in nodes} == {"'illexp_node'", "'illexp_lifecycle_node'"}
    remapped = {ast.unparse(e.elts[0]) for c in nodes for e in resolved(tree, keyword(c, "remappings")).elts}
    assert remapped == {"'image'", "'camera_info'"}  # the node's own topic names


@pytest.mark.parametrize("name", ["illexp.launch.py", "stereo.launch.py"])
def test_launch_autostarts_the_lifecycle_node_once(name):
    """lifecycle:=true: configure at launch, activate when *configuring* ends in inactive, so that a later
    deactivate (also ending in inactive) is not undone by the launch file."""
    tree = tree_of(ROOT / "launch" / name)
    assert {"lifecycle", "autostart"} <= declared_args(tree)
    (call,) = calls(tree, "autostarted")
    assert ast.unparse(call.args[0]) == "node" and calls(tree, "LifecycleNode")
    tree = shared_function("autostarted")
    transitions = {ast.unparse(keyword(c, "transition_id")) for c in calls(tree, "ChangeState")}
    assert transitions == {"Transition.TRANSITION_CONFIGURE", "Transition.TRANSITION_ACTIVATE"}
    (handler,) = calls(tree, "OnStateTransition")
    assert ast.unparse(keyword(handler, "start_state")) == "'configuring'"
    assert ast.unparse(keyword(handler, "goal_state")) == "'inactive'"
    assert "TRANSITION_ACTIVATE" in ast.unparse(keyword(handler, "entities"))


def test_illexp_launch_passes_use_sim_time_to_the_node():
    tree = tree_of(ROOT / "launch" / "illexp.launch.py")
    assert "use_sim_time" in declared_args(tree)
    default = next(keyword(c, "default_value").value for c in calls(tree, "DeclareLaunchArgument")
                   if first_str_arg(c) == "use_sim_time")
    assert default == "", "a default would override a params file's use_sim_time"
    assert calls(tree, "node_parameters")
    launch_node = shared_function("node_parameters")  # the launch files' parameters are built there
    (entry,) = [d for d in ast.walk(launch_node) if isinstance(d, ast.Dict)]
    assert [k.value for k in entry.keys] == ["use_sim_time"]
    assert ast.unparse(entry.values[0]) == "typed(sim_time, bool)"  # a bool, not a string
    assert "if sim_time:" in ast.unparse(launch_node)  # only when given


def test_bag_replay_records_and_plays_as_current_rosbag2_expects():
    """`ros2 bag record` takes its topics after --topics (positional ones are deprecated since Kilted); with
    use_sim_time (the default) the player publishes /clock and the recorder and the node run on it."""
    tree = tree_of(ROOT / "launch" / "bag_replay.launch.py")
    function = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "bag_processes")
    commands = {a.targets[0].id: a.value for a in ast.walk(function) if isinstance(a, ast.Assign)
                and isinstance(a.value, ast.List)}
    record, play = (ast.unparse(commands[name]) for name in ("record", "play"))
    assert record.startswith("['ros2', 'bag', 'record', '-o'") and "'--topics', f'{prefix}/corrected/image'" in record
    assert play.startswith("['ros2', 'bag', 'play'") and "'--topics'" in play
    body = ast.unparse(function)
    assert "record.append('--use-sim-time')" in body and "play.append('--clock')" in body
    default = next(keyword(c, "default_value").value for c in calls(tree, "DeclareLaunchArgument")
                   if first_str_arg(c) == "use_sim_time")
    assert default == "true"
    (include,) = calls(tree, "IncludeLaunchDescription")
    assert "'use_sim_time': LaunchConfiguration('use_sim_time')" in ast.unparse(include)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_included_launch_files_get_only_arguments_they_declare(path):
    tree = tree_of(path)
    for include in calls(tree, "IncludeLaunchDescription"):
        targets = package_paths(include)
        assert len(targets) == 1, ast.unparse(include)
        accepted = declared_args(tree_of(targets[0]))
        args = keyword(include, "launch_arguments")
        dict_node = args.func.value if isinstance(args, ast.Call) else args  # {...}.items()
        passed = {k.value for k in dict_node.keys}
        assert passed <= accepted, f"{path.name} passes {sorted(passed - accepted)} to {targets[0].name}"


def config_text() -> str:
    return (ROOT / "config" / "illexp.yaml").read_text()


def test_config_sets_every_parameter_with_a_valid_value():
    doc = yaml.safe_load(config_text())
    assert len(doc) == 1
    key, body = next(iter(doc.items()))
    assert key.split("/")[-1] == NODE_NAME
    params = body["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert validate(name, value) is None, validate(name, value)
        assert type(value) is type(PARAMETERS[name].default), f"{name}: {value!r} has the wrong type"


def test_config_documents_every_parameter_with_a_comment():
    lines = config_text().splitlines()
    for name in PARAMETERS:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), f"{name} has no comment above it"


def test_launch_arguments_reach_the_node_with_its_parameter_types():
    """The launch files turn each parameter argument into the type the node declares (`launch` is not installable
    here: the launch files' typing is illexp_ros/launch_arguments.py, run here on its own)."""
    for path in (ROOT / "launch" / "illexp.launch.py", ROOT / "launch" / "stereo.launch.py"):
        tree = tree_of(path)
        kinds = next(a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                     and any(getattr(t, "id", "") == "PARAMETER_ARGUMENTS" for t in a.targets))
        for key, kind in zip(kinds.keys, kinds.values, strict=True):
            assert kind.id == type(STEREO_PARAMETERS[key.value].default).__name__, (path.name, key.value)
        assert "node_parameters(context, PARAMETER_ARGUMENTS)" in ast.unparse(tree), path.name
    assert "parameter_overrides(arguments, kinds)" in ast.unparse(shared_function("node_parameters"))
    assert typed("0.5", float) == 0.5 and typed("0", float) == 0.0
    assert validate("level_smoothing", typed("0.5", float)) is None
    assert typed("lots", float) == "lots" and "must be a number" in validate("level_smoothing", "lots")
    assert typed("True", bool) is True and typed("off", bool) is False and typed("0", bool) is False
    assert typed("ture", bool) == "ture"  # not False: the node says the parameter expects a bool
    assert typed("auto", str) == "auto"
    # the launch file's own switches: a typo must not choose the lifecycle node or autostart by being non-empty
    assert flag("lifecycle", "True") is True and flag("autostart", " false ") is False
    with pytest.raises(ValueError, match="launch argument lifecycle:=flase must be true or false"):
        flag("lifecycle", "flase")
    # an empty argument keeps the params file's value; the others come typed
    assert parameter_overrides({"fast": " ", "strength": "0.5", "mode": "auto"},
                               {"fast": bool, "strength": float, "mode": str}) == {"strength": 0.5, "mode": "auto"}


def test_stereo_launch_remaps_both_views_and_uses_the_stereo_params_file():
    tree = tree_of(ROOT / "launch" / "stereo.launch.py")
    topics = next(a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                  and any(getattr(t, "id", "") == "TOPIC_ARGUMENTS" for t in a.targets))
    remapped = {k.value: v.value for k, v in zip(topics.keys, topics.values)}
    assert set(remapped.values()) == {"left/image", "right/image", "left/camera_info", "right/camera_info"}
    assert set(remapped) <= declared_args(tree)
    assert ROOT / "config" / "illexp_stereo.yaml" in package_paths(tree)
