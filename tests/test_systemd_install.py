"""The systemd unit and the install steps of docs/operations.md describe the same layout.

The unit is read from conf/routecodex.service, the steps from the first ``sh`` block of the
"systemd" section of docs/operations.md. Every absolute path the unit uses must be one the
steps create (or systemd creates from the unit's own ``*Directory=``), its user the one the
steps add, and the layout is then built for real under a temporary root -- a venv at the
documented place with this checkout pip-installed into it -- where the unit, rendered for that
root, finds its ``ExecStart`` program and that program checks the installed config.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import attrs

from routecodex_trio.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT_FILE = ROOT / "conf" / "routecodex.service"
OPERATIONS = ROOT / "docs" / "operations.md"
# Programs a unit may name that any Linux system has: not something the install creates.
SYSTEM_PROGRAMS = ("/bin/kill",)


@attrs.define
class Steps:
    """What the documented install creates."""

    lines: list[str]
    paths: set[str] = attrs.field(factory=set)
    user: str | None = None
    venvs: list[str] = attrs.field(factory=list)
    pip_into: list[str] = attrs.field(factory=list)
    config: str | None = None


def documented_steps() -> Steps:
    text = OPERATIONS.read_text()
    section = text[text.index("\n## systemd\n") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no ```sh install block in the systemd section of docs/operations.md"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    steps = Steps(lines)
    for line in lines:
        for command in line.split("&&"):
            argv = shlex.split(command)
            if argv[0] == "useradd":
                steps.user = argv[-1]
            elif argv[:3] == ["python3", "-m", "venv"]:
                steps.venvs.append(argv[3])
                steps.paths.update({argv[3], f"{argv[3]}/bin/python", f"{argv[3]}/bin/pip"})
            elif argv[0].endswith("/bin/pip") and argv[1] == "install":
                venv = argv[0].removesuffix("/bin/pip")
                steps.pip_into.append(venv)
                # [project.scripts] entry points land in the venv's bin/.
                scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
                steps.paths.update(f"{venv}/bin/{name}" for name in scripts)
            elif argv[0] == "install":
                operands = [
                    a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and not _value_of(argv, i)
                ]
                steps.paths.add(operands[-1])
                if operands[-1].endswith(".toml"):
                    steps.config = operands[-1]
    return steps


def _value_of(argv: list[str], i: int) -> bool:
    """Whether argv[i] is the value of an option (``-m 600``, ``-o user``)."""
    return argv[i - 1] in ("-m", "-o", "-g")


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)  # systemd allows repeated keys
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT_FILE)
    return parser


def unit_paths(service: configparser.SectionProxy) -> set[str]:
    """Every absolute path the unit's [Service] refers to."""
    paths: set[str] = set()
    for key in ("ExecStart", "ExecReload", "WorkingDirectory", "EnvironmentFile", "Environment"):
        for word in shlex.split(service.get(key, "")):
            word = word.removeprefix("-").partition("=")[2] if "=" in word else word.removeprefix("-")
            if word.startswith("/"):
                paths.add(word)
    return paths


def test_every_path_of_the_unit_is_created_by_the_documented_install() -> None:
    steps = documented_steps()
    service = unit()["Service"]
    # systemd creates these itself, owned by User=, from the unit's own settings.
    by_systemd = {f"/var/lib/{service['StateDirectory']}", f"/etc/{service['ConfigurationDirectory']}"}
    missing = unit_paths(service) - steps.paths - by_systemd - set(SYSTEM_PROGRAMS)
    assert not missing, f"the unit uses paths the documented install never creates: {sorted(missing)}"
    assert service["User"] == steps.user, "the unit runs as a user the install does not create"
    assert "DynamicUser" not in service or service["DynamicUser"] == "no"


def test_exec_start_is_the_venv_entry_point_with_the_system_config() -> None:
    steps = documented_steps()
    argv = shlex.split(unit()["Service"]["ExecStart"])
    program = argv[0]
    assert steps.venvs and steps.pip_into == steps.venvs, "pip must install into the venv the steps create"
    assert program == f"{steps.venvs[0]}/bin/routecodex"
    # The system config layer (/etc/routecodex/config.toml), the file the install puts there.
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.config) == ("serve", "/etc/routecodex/config.toml")
    assert steps.config == args.config
    # ProtectHome=yes hides /home, /root and /run/user: the venv must be elsewhere.
    if unit()["Service"].get("ProtectHome", "no") != "no":
        assert not program.startswith(("/home/", "/root/", "/run/user/")), program


def test_the_unit_and_the_unit_file_header_give_the_same_steps() -> None:
    header = [
        line.removeprefix("#").strip()
        for line in UNIT_FILE.read_text().splitlines()
        if line.startswith("#   ")
    ]
    documented = [line.replace("pip install .", "pip install") for line in documented_steps().lines]
    for line in documented:
        assert any(h.startswith(line.split(" (")[0].strip()[:40]) for h in header), line


def test_the_documented_layout_built_under_a_root_runs_exec_start(tmp_path: Path) -> None:
    steps = documented_steps()
    root = tmp_path / "root"
    venv = Path(str(root) + steps.venvs[0])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The documented `venv/bin/pip install .`, done by this interpreter's pip on that venv.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert steps.config is not None
    config = Path(str(root) + steps.config)
    config.parent.mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "routecodex.toml", config)
    config.chmod(0o600)
    # Render the unit for the root: every absolute path of the install moves under it.
    rendered = UNIT_FILE.read_text()
    pattern = "|".join(re.escape(path) for path in sorted(steps.paths, key=len, reverse=True))
    rendered = re.sub(pattern, lambda match: str(root) + match.group(0), rendered)
    (root / "routecodex.service").write_text(rendered)
    render = configparser.RawConfigParser(strict=False)
    render.optionxform = str  # type: ignore[assignment,method-assign]
    render.read(root / "routecodex.service")
    argv = shlex.split(render["Service"]["ExecStart"])
    program = Path(argv[0])
    assert program.is_file() and os.access(program, os.X_OK), program
    assert program.read_text().splitlines()[0] == f"#!{venv}/bin/python"
    # The installed program reads the installed config (dependencies from this test's own
    # environment: the venv got --no-deps to keep the test off the network for them).
    check = [str(program), "check-config", argv[argv.index("--config") + 1]]
    env = {
        **os.environ,
        "PYTHONPATH": sysconfig.get_paths()["purelib"] + os.pathsep + sysconfig.get_paths()["platlib"],
    }
    done = subprocess.run(check, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(root) in done.stdout + done.stderr and "OK" in done.stdout + done.stderr
