"""The Jetson and x86 Dockerfiles, read as text (no Docker engine here: nothing is built).

Asserts what the images promise: JetPack 6 base with TensorRT, CycloneDDS built from a pinned
source tag before the Unitree SDK is installed without dependencies, Python 3.10 pins, never
torch, the entrypoint/health probe wired in, and every COPY source present in the repo and not
excluded by the image's .dockerignore.
"""

from __future__ import annotations

import fnmatch
import re

import pytest

from .conftest import DOCKER, REPO, dockerfile_instructions

JETSON = DOCKER / "jetson" / "Dockerfile"
X86 = DOCKER / "x86" / "Dockerfile"
TORCH = re.compile(r"(?<![\w.-])(torch|torchvision|torchaudio)(?![\w-])|\[[^\]]*\btrain\b[^\]]*\]")


def runs(path):
    return [args for ins, args in dockerfile_instructions(path) if ins == "RUN"]


def args_of(path):
    out = {}
    for ins, a in dockerfile_instructions(path):
        if ins == "ARG" and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v.strip('"')
    return out


def pip_install_commands(path):
    """Every `pip install ...` clause of every RUN."""
    out = []
    for r in runs(path):
        for clause in re.split(r"&&|;|\|\|", r):
            if re.search(r"\bpip\d*\s+install\b", clause):
                out.append(clause.strip())
    return out


@pytest.mark.parametrize("path", [JETSON, X86], ids=["jetson", "x86"])
def test_no_torch_is_ever_installed(path):
    installs = pip_install_commands(path)
    assert installs, "found no pip install at all: the parser is broken"
    for c in installs:
        assert not TORCH.search(c), f"{path.name} installs torch: {c}"
    apt = [r for r in runs(path) if "apt-get install" in r]
    assert not any("torch" in r for r in apt)
    # ... and the build fails if something pulled it in anyway.
    assert any("find_spec('torch')" in r and "sys.exit" in r for r in runs(path))


def test_torch_pattern_catches_real_installs():
    for bad in ("pip install torch==2.5", "pip install 'torch>=2'", "pip install ./src[train,sim]",
                "pip install torchvision"):
        assert TORCH.search(bad), bad
    for ok in ("pip install ./src[robot]", "pip install onnxruntime-gpu", "pip install torchlight-x"):
        assert not TORCH.search(ok), ok


def test_jetson_base_is_jetpack6_with_tensorrt_from_the_base():
    a = args_of(JETSON)
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", a["L4T_BASE"]), a["L4T_BASE"]
    froms = [x for i, x in dockerfile_instructions(JETSON) if i == "FROM"]
    assert all(f.startswith("${L4T_BASE}") for f in froms)
    joined = "\n".join(runs(JETSON))
    assert "python3-libnvinfer" in joined  # TensorRT's Python module from JetPack's apt repo
    assert not re.search(r"pip\d*\s+install[^\n]*\btensorrt\b", joined)  # never TensorRT from PyPI
    assert "import tensorrt" in joined  # the build checks it imports


def test_jetson_builds_cyclonedds_from_a_pinned_tag_then_sdk_without_deps():
    a = args_of(JETSON)
    assert re.fullmatch(r"\d+\.\d+\.\d+", a["CYCLONEDDS_TAG"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", a["CYCLONEDDS_PY_VERSION"])
    r = runs(JETSON)
    clone = next(i for i, x in enumerate(r) if "git clone" in x and "cyclonedds" in x)
    assert '--branch "${CYCLONEDDS_TAG}"' in r[clone] and "cmake" in r[clone]
    assert any("--no-binary cyclonedds" in x for x in r[clone + 1:]), "binding built after the C library"
    ins = dockerfile_instructions(JETSON)
    env_at = ins.index(("ENV", "CYCLONEDDS_HOME=/opt/cyclonedds"))
    wheel_at = next(i for i, (k, a) in enumerate(ins) if k == "RUN" and "--no-binary cyclonedds" in a)
    assert env_at < wheel_at, "the binding must be compiled against the library built above"
    sdk = next(i for i, x in enumerate(r) if "UNITREE_SDK_SPEC" in x)
    cmd = r[sdk]
    assert cmd.index("cyclonedds-*.whl") < cmd.index("UNITREE_SDK_SPEC"), "cyclonedds must be installed first"
    assert re.search(r'pip install --no-deps "\$\{UNITREE_SDK_SPEC\}"', cmd)


@pytest.mark.parametrize("path", [JETSON, X86], ids=["jetson", "x86"])
def test_python310_pins(path):
    cons = (path.parent / "constraints.txt").read_text()
    assert re.search(r"^numpy<2\.3$", cons, re.M)
    assert re.search(r"^onnxruntime<1\.24$", cons, re.M)
    assert "constraints.txt" in path.read_text()


def test_x86_variants_and_base():
    a = args_of(X86)
    assert a["BASE_IMAGE"].startswith("python:3.10")
    assert a["VARIANT"] == "cpu"
    r = "\n".join(runs(X86))
    assert "cuda)" in r and "onnxruntime-gpu" in r and "pip uninstall -y onnxruntime" in r
    assert "VARIANT must be cpu or cuda" in r


@pytest.mark.parametrize("path", [JETSON, X86], ids=["jetson", "x86"])
def test_entrypoint_healthcheck_and_default_command(path):
    ins = dockerfile_instructions(path)
    last = {i: a for i, a in ins}
    assert last["ENTRYPOINT"] == '["planner-runtime-entrypoint"]'
    assert last["CMD"] == '["serve"]'
    assert "planner-runtime-healthcheck" in last["HEALTHCHECK"]
    copies = [a for i, a in ins if i == "COPY"]
    assert "docker/entrypoint.sh /usr/local/bin/planner-runtime-entrypoint" in copies
    assert "docker/healthcheck.py /usr/local/bin/planner-runtime-healthcheck" in copies


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for these files: last match wins, ! re-includes."""
    ignored = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        if pat == "**" or fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat.replace("/**", "/*")) \
                or (pat.endswith("/**") and rel.startswith(pat[:-3] + "/")) \
                or (pat.startswith("**/") and fnmatch.fnmatch(rel.split("/")[-1], pat[3:])):
            ignored = not neg
    return ignored


@pytest.mark.parametrize("path", [JETSON, X86], ids=["jetson", "x86"])
def test_copy_sources_exist_and_are_in_the_build_context(path):
    patterns = [line.strip() for line in (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for i, a in dockerfile_instructions(path):
        if i != "COPY" or a.startswith("--from"):
            continue
        *srcs, _dst = a.split()
        for src in srcs:
            p = REPO / src
            assert p.exists(), f"{path.name}: COPY source {src} is missing"
            files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
            assert files, src
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                assert not _ignored(rel, patterns), f"{path.name}: {rel} is excluded from the build context"
    assert _ignored("tests/conftest.py", patterns) and _ignored(".git/HEAD", patterns)


@pytest.mark.parametrize("path", [JETSON, X86], ids=["jetson", "x86"])
def test_every_multi_command_run_fails_on_the_first_error(path):
    """A RUN of `a; b` succeeds when `a` fails: such steps must start with `set -e` (the
    SHELL sets only pipefail); `&&` chains stop by themselves."""
    for r in runs(path):
        unquoted = re.sub(r'"[^"]*"|\'[^\']*\'', "", r)  # `python -c "a; b"` is one command
        if ";" in unquoted.replace(";;", ""):
            assert r.startswith("set -e;"), f"{path.name}: RUN without set -e: {r[:80]}..."
