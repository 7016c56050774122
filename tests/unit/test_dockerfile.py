"""The Space image, checked statically (Docker cannot run on the CI machines).

Each test names a trap of the official TGI image (see ../shared/reference/TGI.md) or a rule of
Hugging Face Docker Spaces, and reads the Dockerfile the way Docker does: continuation lines
joined, comments dropped, ENV and USER tracked in order.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
OPENAPI = ROOT.parent / "shared" / "reference" / "tgi" / "openapi.json"
DEV_MODE_PACKAGES = ("bash", "curl", "wget", "procps", "git", "git-lfs")
GPU_HARDWARE = {"t4-small", "t4-medium", "l4x1", "l4x4", "l40sx1", "l40sx4", "l40sx8",
                "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large",
                "h100", "h100x8"}


@dataclass(frozen=True)
class Step:
    keyword: str
    args: str
    user: str  # who runs this step
    env: dict[str, str]  # environment in effect at this step (ENV set so far)


def parse(text: str) -> list[Step]:
    """Dockerfile instructions in order, with the user and ENV in effect at each one."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current.strip():
        logical.append(current)
    steps: list[Step] = []
    user = "root"
    env: dict[str, str] = {}
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            user, env = "root", {}
        steps.append(Step(keyword, args, user, dict(env)))
        if keyword == "USER":
            user = args
        elif keyword == "ENV":
            env.update(_env_pairs(args))
    return steps


def _env_pairs(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


@pytest.fixture(scope="module")
def steps() -> list[Step]:
    return parse(DOCKERFILE.read_text())


def only(steps: list[Step], keyword: str) -> list[Step]:
    return [s for s in steps if s.keyword == keyword]


def final_env(steps: list[Step]) -> dict[str, str]:
    env = dict(steps[-1].env)
    if steps[-1].keyword == "ENV":
        env.update(_env_pairs(steps[-1].args))
    return env


def exec_form(step: Step) -> list[str]:
    value = json.loads(step.args)
    assert isinstance(value, list), f"{step.keyword} must use the JSON (exec) form"
    return value


def test_parser_reads_docker_syntax():
    steps = parse("FROM x:1\n# note\nRUN a \\\n  # inside\n  && b\nENV A=1 B=\"two words\"\n"
                  "USER 1000\nENV C 3\nCMD [\"p\"]\n")
    assert [s.keyword for s in steps] == ["FROM", "RUN", "ENV", "USER", "ENV", "CMD"]
    assert steps[1].args == "a && b"
    assert steps[-1].env == {"A": "1", "B": "two words", "C": "3"}
    assert steps[-1].user == "1000"


def test_base_image_is_tgi_pinned_to_the_version_of_the_reference_spec(steps):
    froms = only(steps, "FROM")
    assert len(froms) == 1 and steps[0].keyword == "FROM"
    match = re.fullmatch(r"ghcr\.io/huggingface/text-generation-inference:(\d+\.\d+\.\d+)",
                         froms[0].args)
    assert match, f"pin an exact x.y.z version, got {froms[0].args!r}"
    # The spec is generated from the source tree, whose version reads "3.3.6-dev0".
    spec_version = json.loads(OPENAPI.read_text())["info"]["version"].split("-")[0]
    assert match.group(1) == spec_version == "3.3.6"


def test_root_is_opened_for_uid_1000_as_root(steps):
    """TGI issue 3082: libpython3.11.so lives under /root, closed to the Space's uid 1000."""
    fixes = [s for s in only(steps, "RUN") if "chmod 755 /root" in s.args]
    assert fixes, "the Dockerfile must `chmod 755 /root`"
    assert all(s.user == "root" for s in fixes)


def test_container_runs_as_uid_1000_with_a_home(steps):
    users = only(steps, "USER")
    final = users[-1].args
    created = [s for s in only(steps, "RUN") if re.search(r"useradd\b.*(--uid|-u) 1000\b", s.args)]
    assert created and created[0].user == "root"
    assert final == "1000" or re.search(rf"useradd\b.*\b{re.escape(final)}\b", created[0].args)
    assert users[-1] == [s for s in steps if s.keyword == "USER"][-1]
    home = final_env(steps).get("HOME")
    assert home and any(f"chown 1000:1000 {home}" in s.args for s in only(steps, "RUN"))


def _writable_dirs(steps: list[Step]) -> list[str]:
    """Folders a root RUN both creates and hands to uid 1000."""
    dirs: list[str] = []
    for step in only(steps, "RUN"):
        if step.user != "root":
            continue
        made = re.findall(r"mkdir -p ([^&;]+)", step.args)
        owned = re.findall(r"chown -R 1000(?::1000)? ([^&;]+)", step.args)
        made_dirs = {d for group in made for d in group.split()}
        for group in owned:
            for folder in group.split():
                if any(m == folder or m.startswith(folder.rstrip("/") + "/") for m in made_dirs):
                    dirs.append(folder.rstrip("/"))
    return dirs


def _inside(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def test_hf_home_and_results_dir_exist_and_are_writable_by_uid_1000(steps):
    """The image sets HF_HOME=/data but never creates /data."""
    env = final_env(steps)
    writable = _writable_dirs(steps)
    assert env["HF_HOME"] and _inside(env["HF_HOME"], writable)
    assert env["RESULTS_DIR"] and _inside(env["RESULTS_DIR"], writable)
    assert _inside("/app", writable)


def test_port_80_trap_is_defused_and_gradio_listens_on_7860_everywhere(steps):
    env = final_env(steps)
    assert env.get("PORT") not in (None, "80", "7860"), (
        "the image's PORT=80 is read by text-generation-launcher; 7860 would collide with the app")
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env["GRADIO_SERVER_PORT"] == "7860"
    assert [s.args for s in only(steps, "EXPOSE")] == ["7860"]


def test_entrypoint_is_reset_and_cmd_starts_the_app_with_its_own_python(steps):
    """The image's ENTRYPOINT would turn CMD into launcher arguments."""
    keywords = [s.keyword for s in steps]
    entry = keywords.index("ENTRYPOINT")
    cmd = len(keywords) - 1 - keywords[::-1].index("CMD")
    assert exec_form(steps[entry]) == []
    assert entry < cmd, "ENTRYPOINT resets CMD: reset it first, then set CMD"
    argv = exec_form(steps[cmd])
    venv = final_env(steps)["APP_VENV"]
    assert argv[0] == f"{venv}/bin/python"
    assert argv[1:] == ["app.py"]
    workdirs = only(steps, "WORKDIR")
    assert workdirs[-1].args == "/app"
    assert (ROOT / "app.py").is_file()


def test_app_has_its_own_venv_built_from_requirements(steps):
    """TGI's venv pins older transformers / huggingface_hub: never install into it."""
    venv = final_env(steps)["APP_VENV"]
    runs = only(steps, "RUN")
    made = [i for i, s in enumerate(runs)
            if re.search(rf"(uv venv|-m venv)\b.*\s{re.escape(venv)}(\s|$)", s.args)]
    assert made, "create the app's venv with /bin/uv venv (or python -m venv)"
    installs = [i for i, s in enumerate(runs) if "-r /app/requirements.txt" in s.args
                and (f"--python {venv}/bin/python" in s.args or f"{venv}/bin/pip" in s.args)]
    assert installs and installs[0] >= made[0]
    assert not any("/usr/src/.venv" in s.args for s in runs)
    copies = [i for i, s in enumerate(steps) if s.keyword == "COPY"
              and re.search(r"\brequirements\.txt /app/requirements\.txt$", s.args)]
    first_install = steps.index(runs[installs[0]])
    assert copies and copies[0] < first_install
    assert (ROOT / "requirements.txt").is_file()


def test_dev_mode_packages_are_installed(steps):
    installed: set[str] = set()
    for step in only(steps, "RUN"):
        for match in re.finditer(r"apt-get install ([^&;]+)", step.args):
            installed |= {w for w in match.group(1).split() if not w.startswith("-")}
    assert set(DEV_MODE_PACKAGES) <= installed


def test_app_code_lives_in_app_owned_by_uid_1000(steps):
    copies = [s.args for s in only(steps, "COPY")]
    assert any(re.fullmatch(r"--chown=1000(:1000)? \. /app/?", c) for c in copies)


def test_local_venv_and_results_stay_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv/", "results/"} <= ignored


def test_readme_front_matter_makes_a_docker_space_with_sign_in(steps):
    from huggingface_hub.repocard import metadata_load

    meta = metadata_load(ROOT / "README.md")
    assert meta, "README.md must start with the Space front matter (--- ... ---)"
    assert meta["sdk"] == "docker"
    assert str(meta["app_port"]) == only(steps, "EXPOSE")[-1].args == "7860"
    assert meta["hf_oauth"] is True
    assert meta["suggested_hardware"] in GPU_HARDWARE
    assert meta.get("title") and meta.get("emoji")
    assert 0 < len(meta.get("short_description", "")) <= 60


def test_every_run_step_is_valid_shell(steps):
    """RUN's shell form goes to /bin/sh -c: a syntax slip would only show at build time."""
    import subprocess

    for step in only(steps, "RUN"):
        check = subprocess.run(["sh", "-n", "-c", step.args], capture_output=True, text=True)
        assert check.returncode == 0, f"{step.args[:60]}...: {check.stderr}"
