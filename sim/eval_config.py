"""The options of ``planner-runtime eval`` as one typed, frozen config: :class:`EvalConfig`.

The command line (:func:`add_arguments`: the Go2 options here, the chunk rules of
``planner_runtime.chunking``, ``--model`` of ``sim.physics``, the Gymnasium options of
``sim.gym_eval``) is the one place the options and their defaults are written; each field
of :class:`EvalConfig` takes its default from that parser (:func:`_default`), so the two
cannot disagree. The parsed options become an ``EvalConfig`` once, through
``planner_runtime.config.from_mapping`` (:func:`config_from_args`); from there on the Go2
evaluation (``sim.evaluate``), the robustness matrix (``sim.eval_matrix``), the latency sweep
(``sim.latency_sweep``), the speed sweep (``sim.speed_sweep``), the plan fidelity check
(``sim.plan_fidelity``) and the Gymnasium evaluation (``sim.gym_eval``) read only the config.

A config read from a mapping (JSON, a dict) goes through ``from_mapping(EvalConfig, data,
where)``: an unknown key is refused with a ``ConfigError`` naming it and the close match. A
matrix or sweep cell is a checked ``dataclasses.replace`` of a base config
(:func:`with_changes`: the changed keys checked the same way) and runs as a subprocess with
the command-line arguments that parse back to it (:func:`to_argv`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from planner_runtime.config import check_mapping, from_mapping

EVAL_SEED = 10000  # the base seed of the evaluation episodes; data collection does not use it
WHERE = "planner-runtime eval options"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``planner-runtime eval`` (one per :class:`EvalConfig` field)."""
    from planner_runtime.chunking import add_chunking_arguments
    from sim.gym_eval import add_gym_arguments
    from sim.physics import add_model_argument

    p.add_argument("--engine", action="append", default=[], metavar="NAME=PATH",
                   help="an engine to evaluate (repeatable); default: the embedded Go2 engine")
    p.add_argument("--no-expert", action="store_true", help="skip the reference policies")
    p.add_argument("--reference", nargs="+", choices=("trot", "ppo"), default=["trot"],
                   help="reference policies run on the same episodes (default: trot; ppo = the PPO walking policy)")
    add_model_argument(p)
    p.add_argument("--randomize", action="store_true",
                   help="randomize physics per episode over sim.physics.RANDOMIZED (--friction/--mass-delta/--actuator-lag/--obs-latency override their ranges)")
    p.add_argument("--actuator-lag", type=float, default=None, metavar="MS",
                   help="a fixed first-order actuator torque lag (ms)")
    p.add_argument("--obs-latency", type=float, default=None, metavar="MS",
                   help="a fixed observation latency (ms): every method reads the state this old")
    p.add_argument("--episodes", type=int, default=20, help="episodes per method (default %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of planning per episode")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="base seed (default %(default)s)")
    p.add_argument("--command", type=float, nargs=3, default=None, metavar=("VX", "VY", "YAW"),
                   help="a constant command instead of random schedules")
    p.add_argument("--schedule", default=None, metavar="T:VX,VY,YAW;...",
                   help="one command schedule from the start of planning for every episode (the "
                        "demo's form) instead of random schedules")
    p.add_argument("--pushes", action="store_true", help="random pushes during episodes")
    p.add_argument("--friction", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--mass-delta", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kg added to the trunk, sampled per episode")
    p.add_argument("--chunk", type=int, default=None, help="actions executed per plan (default: manifest)")
    p.add_argument("--latency", type=float, nargs="+", default=None, metavar="MS",
                   help="simulated plan latency in ms: one value, or LO HI drawn per plan (default 0)")
    p.add_argument("--timing-trace", default=None, metavar="RUN",
                   help="replay a real-time run's timing in the planner's episodes: its plan turnarounds "
                        "in order and its loop periods (a demo run folder, or a controller --timing-out "
                        "NPZ; sim/timing_replay.py); instead of --latency")
    add_chunking_arguments(p)
    p.add_argument("--cfg-w", type=float, default=None, help="override the engine's CFG weight")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--ranker-check", action="store_true",
                   help="score every candidate of each plan by executing it open loop on a copy of "
                        "the simulator: does the ranker's pick beat a random one? (engines with "
                        "N > 1 candidates; sim/ranker_check.py)")
    p.add_argument("--ranker-data", default=None, metavar="OUT.h5",
                   help="with --ranker-check: write every scored candidate as a dataset episode (the "
                        "plan's states and actions, the rewards executing it earned): data to "
                        "fine-tune a ranker on its own engine's candidates")
    p.add_argument("--record", default=None, metavar="OUT.h5",
                   help="write episodes as a new dataset: on the Go2, the one --engine's own closed-loop "
                        "episodes (the states it visited under these latency and physics options, the "
                        "actions it executed; robot/recording.py); with --env, the reference policy's "
                        "(one --policy)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", default=None, metavar="PNG", help="write tracking curves and bars here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--matrix", default=None, metavar="DIR",
                   help="run the robustness matrix (models x conditions, sim.eval_matrix) into DIR")
    p.add_argument("--matrix-models", nargs="+", default=None, metavar="MODEL",
                   help="models of the matrix (default: project menagerie menagerie-fitted)")
    p.add_argument("--matrix-conditions", nargs="+", default=None, metavar="COND",
                   help="conditions of the matrix (default: all of sim.eval_matrix.CONDITIONS)")
    p.add_argument("--matrix-ppo-from", default=None, metavar="DIR",
                   help="take the PPO reference column from an earlier matrix run in DIR (its cells/*.json, "
                        "run with --reference ppo on the same episodes, duration, seed and conditions: "
                        "checked) instead of running the policy again; lockstep episodes are deterministic")
    p.add_argument("--jobs", type=int, default=2,
                   help="matrix / sweep cells run in parallel (default %(default)s)")
    p.add_argument("--latency-sweep", default=None, metavar="DIR",
                   help="run the latency sweep (latencies x chunk rules, sim.latency_sweep) into DIR")
    p.add_argument("--sweep-latencies", type=float, nargs="+", default=None, metavar="MS",
                   help="latencies of the sweep (default 0 20 40 80)")
    p.add_argument("--sweep-rules", nargs="+", default=None, metavar="RULE",
                   help="chunk rules of the sweep (default: all of sim.latency_sweep.RULES)")
    p.add_argument("--speed-sweep", default=None, metavar="DIR",
                   help="run the speed sweep (constant straight-ahead commands from a stand, "
                        "sim.speed_sweep) into DIR: the speed each method reaches")
    p.add_argument("--sweep-speeds", type=float, nargs="+", default=None, metavar="V",
                   help="commanded speeds of the speed sweep in m/s (default 0.1 0.2 0.3 0.4 0.5 0.6 0.8)")
    p.add_argument("--plan-fidelity", default=None, metavar="DATA.h5",
                   help="open loop, no simulator: plan from the dataset's straight-walking rows and set "
                        "each --engine's plans against what the demonstrator did (sim.plan_fidelity)")
    add_gym_arguments(p)  # --env ID: any Gymnasium environment (sim/gym_eval.py)


_PARSER = argparse.ArgumentParser(add_help=False)
add_arguments(_PARSER)
_PARSED_DEFAULTS = vars(_PARSER.parse_args([]))  # option (dest) -> its default


def _default(name: str) -> Any:
    """The parser's default of option ``name`` (a list becomes a tuple: the config is frozen)."""
    v = _PARSED_DEFAULTS[name]
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class EvalConfig:
    """Every option of ``planner-runtime eval`` (the flag ``--x-y`` is the field ``x_y``;
    units as on the command line: ms for latencies, s for durations)."""

    # methods
    engine: tuple[str, ...] = _default("engine")  # NAME=PATH or PATH; () = the embedded Go2 engine
    no_expert: bool = _default("no_expert")
    reference: tuple[Literal["trot", "ppo"], ...] = _default("reference")
    # episodes and physics
    model: str = _default("model")
    randomize: bool = _default("randomize")
    actuator_lag: float | None = _default("actuator_lag")
    obs_latency: float | None = _default("obs_latency")
    episodes: int = _default("episodes")
    duration: float = _default("duration")
    seed: int = _default("seed")
    command: tuple[float, float, float] | None = _default("command")
    schedule: str | None = _default("schedule")
    pushes: bool = _default("pushes")
    friction: tuple[float, float] | None = _default("friction")
    mass_delta: tuple[float, float] | None = _default("mass_delta")
    # planning and chunk rules (planner_runtime.chunking)
    chunk: int | None = _default("chunk")
    latency: tuple[float, ...] | None = _default("latency")
    timing_trace: str | None = _default("timing_trace")
    merge: str | None = _default("merge")
    start_state: str = _default("start_state")
    replan_every: int | None = _default("replan_every")
    delay_ticks: int | None = _default("delay_ticks")
    cfg_w: float | None = _default("cfg_w")
    threads: int = _default("threads")
    ranker_check: bool = _default("ranker_check")
    ranker_data: str | None = _default("ranker_data")
    # output
    record: str | None = _default("record")
    json: bool = _default("json")
    plot: str | None = _default("plot")
    no_progress: bool = _default("no_progress")
    # robustness matrix (sim.eval_matrix) and latency sweep (sim.latency_sweep)
    matrix: str | None = _default("matrix")
    matrix_models: tuple[str, ...] | None = _default("matrix_models")
    matrix_conditions: tuple[str, ...] | None = _default("matrix_conditions")
    matrix_ppo_from: str | None = _default("matrix_ppo_from")
    jobs: int = _default("jobs")
    latency_sweep: str | None = _default("latency_sweep")
    sweep_latencies: tuple[float, ...] | None = _default("sweep_latencies")
    sweep_rules: tuple[str, ...] | None = _default("sweep_rules")
    speed_sweep: str | None = _default("speed_sweep")
    sweep_speeds: tuple[float, ...] | None = _default("sweep_speeds")
    plan_fidelity: str | None = _default("plan_fidelity")
    # Gymnasium environments (sim.gym_eval)
    env: str | None = _default("env")
    env_kwargs: str | None = _default("env_kwargs")  # JSON
    max_steps: int | None = _default("max_steps")
    condition: tuple[float, ...] | None = _default("condition")
    condition_hook: str | None = _default("condition_hook")
    policy: tuple[str, ...] = _default("policy")
    temperature: float | None = _default("temperature")
    diversity: int = _default("diversity")


def config_from_args(args: argparse.Namespace, where: str = WHERE) -> EvalConfig:
    """The :class:`EvalConfig` of parsed command-line options: the eval options of ``args``
    (keys of the enclosing command line, such as ``--verbose``, are not eval options), read
    by ``from_mapping``. Raises ``ConfigError``."""
    return from_mapping(EvalConfig, {k: v for k, v in vars(args).items() if k in _PARSED_DEFAULTS}, where)


def with_changes(cfg: EvalConfig, changes: Mapping[str, Any], where: str) -> EvalConfig:
    """``dataclasses.replace(cfg, **changes)`` with every changed key and value checked as in
    ``from_mapping`` (an unknown key or a value of the wrong type: ``ConfigError`` naming it)."""
    return dataclasses.replace(cfg, **check_mapping(EvalConfig, changes, where))


def _arg(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def to_argv(cfg: EvalConfig) -> list[str]:
    """Command-line arguments of ``planner-runtime eval`` that parse back to ``cfg`` (the
    options that differ from their defaults, in the parser's order)."""
    default = EvalConfig()
    out: list[str] = []
    for a in _PARSER._actions:
        v = getattr(cfg, a.dest)
        if v == getattr(default, a.dest):
            continue
        flag = max(a.option_strings, key=len)
        if v is None or (a.nargs == 0 and v is not True):
            raise ValueError(f"{a.dest}={v!r} has no command-line form ({flag})")
        if a.nargs == 0:  # a flag (store_true)
            out.append(flag)
        elif isinstance(a, argparse._AppendAction):  # repeatable: one flag per item
            for x in v:
                out += [flag, _arg(x)]
        elif a.nargs is not None:  # several values
            out += [flag, *(_arg(x) for x in v)]
        else:
            out += [flag, _arg(v)]
    return out


# The options only a Gymnasium evaluation (``--env``, sim/gym_eval.py) reads, and all it reads.
GYM_ONLY = ("env_kwargs", "max_steps", "condition", "condition_hook", "policy", "temperature", "diversity")
GYM_OPTIONS = ("env", "engine", "episodes", "seed", "threads", "chunk", "cfg_w", "record", "json", "no_progress",
               *GYM_ONLY)


def as_flags(names: Iterable[str]) -> str:
    """Option names as the command line spells them: ``["cfg_w", "seed"]`` -> ``--cfg-w, --seed``."""
    return ", ".join("--" + k.replace("_", "-") for k in names)


def given_options(cfg: EvalConfig) -> list[str]:
    """The options of ``cfg`` that differ from their defaults (in field order)."""
    defaults = EvalConfig()
    return [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)]


def unused_options(cfg: EvalConfig) -> list[str]:
    """The options given that this kind of evaluation would not read: Go2-only ones with
    ``--env``, Gymnasium-only ones without it. The caller refuses them, so no option is
    silently ignored."""
    given = given_options(cfg)
    if cfg.env:
        return [k for k in given if k not in GYM_OPTIONS]
    return [k for k in given if k in GYM_ONLY]
