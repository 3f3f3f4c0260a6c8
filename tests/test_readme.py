"""Every command and code block of README.md runs, against real servers, and says what it shows.

The README's fenced blocks are read in order. ``bash`` blocks run in bash (``set
-eo pipefail``), ``python`` blocks in this Python; exported variables carry from
block to block as in one terminal. A ``text`` block right after a block that runs
is its sample output: each of its lines must appear in what the block printed,
with numbers and histogram bars left out of the comparison (a line ending in
``...`` only has to start a printed line). A block preceded by
``<!-- file: NAME -->`` is also saved as NAME for the blocks after it; a block
preceded by ``<!-- not run: why -->`` is not run (only where unavoidable).

The quick start runs as written, starting its own simulated DAQ and server and
stopping them with its own commands. The other sections run against a server on
files the simulated DAQ wrote. Port 9090 is replaced by the test's port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from demo.daqsim import DaqSimulator
from dispatcher.testing import free_port

README = ROOT / "README.md"
QUICK_START = "Quick start"
BLOCK_TIMEOUT = 120


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    section: str  # the enclosing "## " heading
    lang: str
    code: str
    marker: str = ""  # the html comment right before the fence, without <!-- -->
    sample: str | None = None  # the text block right after it

    @property
    def runs(self) -> bool:
        return self.lang in ("bash", "python") and not self.marker.startswith("not run")


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    section, i, last_nonblank = "", 0, ""
    after_block = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            lang = line[3:].strip()
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            m = re.fullmatch(r"<!--\s*(.*?)\s*-->", last_nonblank.strip())
            code = "\n".join(body) + "\n"
            if lang == "text" and after_block and blocks and blocks[-1].runs and blocks[-1].sample is None:
                blocks[-1].sample = code
            else:
                blocks.append(Block(start + 1, section, lang, code, m.group(1) if m else ""))
            after_block = True
            last_nonblank = ""
            i += 1
            continue
        if line.strip():
            last_nonblank = line
            after_block = False
        i += 1
    return blocks


BLOCKS = parse(README.read_text())
SECTIONS = [s for s in dict.fromkeys(b.section for b in BLOCKS if b.runs) if s != QUICK_START]


def normalize(line: str) -> str:
    """A line without what changes from run to run: numbers and the length of histogram bars."""
    line = re.sub(r"\|[#. ]*\|", "||", line)
    line = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", line)
    return " ".join(line.split())


def session_processes(sids) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[0]) in sids:
            found.append((int(parts[1]), parts[2]))
    return found


class Terminal:
    """Runs README blocks one after another in ``cwd``, carrying exported variables like one shell."""

    def __init__(self, cwd: Path, env: dict, port: int):
        self.cwd, self.env, self.port = cwd, env, port
        self.env_file = cwd / ".readme-env"
        self.env_file.write_text("")
        self.sessions: list[int] = []  # every block runs in its own session: what it leaves is found
        self.count = 0

    def run(self, block: Block) -> str:
        self.count += 1
        code = block.code.replace("9090", str(self.port))
        if block.marker.startswith("file:"):
            (self.cwd / block.marker.split(":", 1)[1].strip()).write_text(code)
        if block.lang == "bash":
            script = f"set -eo pipefail\nsource {self.env_file}\n{code}\nexport -p > {self.env_file}\n"
            argv = ["bash", "-c", script]
        else:
            path = self.cwd / f".readme-block-{self.count}.py"
            path.write_text(code)
            argv = ["bash", "-c", f'source {self.env_file} && exec "$0" "$1"', sys.executable, str(path)]
        out_path = self.cwd / f".readme-out-{self.count}.txt"
        # output to a file, not a pipe: a block may leave a server running in the background
        with open(out_path, "w") as out:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.sessions.append(proc.pid)
            try:
                rc = proc.wait(BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait(10)
        output = out_path.read_text()
        where = f"README.md line {block.line} ({block.lang}, section {block.section!r})"
        assert rc == 0, f"{where} exited with {rc}:\n{code}\n--- output ---\n{output}"
        if block.sample is not None:
            printed = {normalize(line) for line in output.splitlines()}
            for line in block.sample.replace("9090", str(self.port)).splitlines():
                want = normalize(line)
                if want.endswith("...") and want != "...":  # a line that goes on differently each run
                    assert any(p.startswith(want[:-3]) for p in printed), (
                        f"{where}: sample output line not printed:\n{line}\n--- output ---\n{output}")
                elif want and want != "...":
                    assert want in printed, (
                        f"{where}: sample output line not printed:\n{line}\n--- output ---\n{output}")
        return output

    def close(self) -> list[tuple[int, str]]:
        """End whatever the blocks left running; return what that was."""
        left = session_processes(set(self.sessions))
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def test_every_block_runs_or_says_why_not():
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        assert block.lang in ("bash", "python", "text") or block.marker.startswith("not run:"), (
            f"README.md line {block.line}: a ```{block.lang} block that is neither run nor marked "
            f"'<!-- not run: why -->'")
    not_run = [b for b in BLOCKS if b.marker.startswith("not run")]
    assert len(not_run) == 1 and "make demo" in not_run[0].code  # only the demo, which test_demo runs
    assert README.read_text().splitlines()[0] == "# DDS: the data dispatcher"
    assert [line.split("#")[0].strip() for line in not_run[0].code.splitlines()] == ["make demo", "make test"]


def test_quick_start_runs_as_written_and_its_stop_commands_leave_nothing(tmp_path):
    blocks = [b for b in BLOCKS if b.section == QUICK_START and b.runs]
    assert [b.lang for b in blocks] == ["bash", "python", "bash"]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k != "DDS_DAQ_DATA_DIR"}
    term = Terminal(tmp_path, env, free_port())
    try:
        started = term.run(blocks[0])
        assert f"listening on 0.0.0.0:{term.port}" in started or _listening(tmp_path, term.port)
        printed = term.run(blocks[1])
        assert len(re.findall(r"^F00012345_0000\.mdaq\.root \d+ snarl \d+ nhits \d+$", printed, re.M)) == 5
        term.run(blocks[2])
        deadline = time.monotonic() + 20
        while session_processes(set(term.sessions)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_processes(set(term.sessions)) == []  # ddscomm -s and kill stopped everything
        assert "stopped" in (tmp_path / "ddsparentserver.log").read_text()
    finally:
        term.close()


def _listening(cwd: Path, port: int, timeout: float = 20.0) -> bool:
    """The server was slower than the README's ``sleep 2``: it must still come up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"listening on 0.0.0.0:{port}" in (cwd / "ddsparentserver.log").read_text():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def daq_server(tmp_path_factory):
    """A server on 20 s of simulated DAQ data in four files, as the README's examples expect."""
    from conftest import Server

    data_dir = tmp_path_factory.mktemp("readme") / "daq-data"
    with DaqSimulator(data_dir, seconds_per_file=5.0, start_time=time.time() - 25, seed=3) as sim:
        for _ in range(400):
            sim.step()
    server = Server(data_dir)
    yield server
    server.stop()


@pytest.mark.parametrize("section", SECTIONS)
def test_section_examples_run_against_a_server(section, daq_server, tmp_path):
    blocks = [b for b in BLOCKS if b.section == section and b.runs]
    assert blocks
    env = {**os.environ, "DDS_DAQ_DATA_DIR": daq_server.data_dir, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    term = Terminal(tmp_path, env, daq_server.port)
    try:
        for block in blocks:
            term.run(block)
    finally:
        left = term.close()
    assert left == [], f"blocks of {section!r} left processes running: {left}"


@pytest.mark.parametrize("command", ["ddsparentserver", "ddsjob"])
def test_option_tables_list_every_option_of_the_command(command):
    help_text = subprocess.run([str(BIN / command), "-h"], capture_output=True, text=True, timeout=60).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text))
    assert "--help" in options and len(options) >= 5
    text = README.read_text()
    missing = sorted(o for o in options if f"`{o}" not in text and f", {o}" not in text)
    assert missing == [], f"README.md does not explain these {command} options: {missing}"
