"""Node power from the BMC (issue 21): the window arithmetic, the configuration and its
credentials, the merge, and end to end over the real protocols on the loopback: Redfish against
the mockup under tests/node served over HTTP (read with DMTF's `redfish` client), IPMI DCMI
against a BMC built on pyghmi's server class (read with pyghmi's client).

The window arithmetic is checked against hand calculations with a fake client on a fake clock:

    watts polled at t = 0, 1, 2, 3 s: 100, 300, 300, 500 W; the window [0.5, 2.5] s:
    at 0.5 s the line from 100 to 300 gives 200 W; at 2.5 s, 400 W.
    trapezoids: (200 + 300) / 2 x 0.5 + (300 + 300) / 2 x 1 + (300 + 400) / 2 x 0.5
              = 125 + 300 + 175 = 600 J over 2 s = 300 W
    the same as an energy counter at 0, 200, 500, 800 J: at 0.5 s 100 J, at 2.5 s 650 J: 550 J
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.device.bmc.base import BmcError, BmcSample
from bench.device.bmc.target import NodeConfigError, parse_spec
from bench.measure.groups import RankInfo
from bench.merge import _job_node_energy
from bench.monitor.node import NODE_POWER_GAPS, NODE_WINDOW_TOO_SHORT, NodePower, open_node_power
from bench.record import CaseRecord, Energy

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "wb-operator-7x", "Zq-7x!secret-bmc-pw"


class FakeClient:
    """Answers from a list, one per poll; an Exception item is raised as the BMC's error."""

    source, resource, averaging_s = "fake_power", "fake", None

    def __init__(self, answers, declared_update_s=None) -> None:
        self.answers, self.declared_update_s, self.closed = list(answers), declared_update_s, False

    def sample(self) -> BmcSample:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _polled(answers, times, declared=1.0) -> NodePower:
    clock = Clock()
    node = NodePower(FakeClient(answers, declared), 1.0, "fake://bmc", clock=clock)
    for t in times:
        clock.t = t
        node.poll()
    return node


def test_a_window_of_polled_watts_is_the_integral_of_the_line_through_them():
    node = _polled([BmcSample(watts=w) for w in (100, 300, 300, 500)], [0, 1, 2, 3])
    window = node.window(0.5, 2.5)
    assert window.energy.joules == pytest.approx(600.0) and window.energy.avg_watts == pytest.approx(300.0)
    assert window.energy.boundary == "node" and window.energy.source == "fake_power"
    assert window.energy.integral_joules == pytest.approx(600.0) and window.energy.counter_joules is None
    assert window.flags == (NODE_WINDOW_TOO_SHORT,)  # 2 s is under five 1 s updates: flagged, still given


def test_a_window_of_an_energy_counter_is_its_difference_between_the_edges():
    node = _polled([BmcSample(energy_j=e) for e in (0, 200, 500, 800)], [0, 1, 2, 3])
    window = node.window(0.5, 2.5)
    assert window.energy.joules == pytest.approx(550.0) and window.energy.counter_joules == pytest.approx(550.0)
    long = node.window(0.0, 7.0)  # past the last poll the last rate (300 W) carries on: 800 + 4 x 300
    assert long.energy.joules == pytest.approx(2000.0) and long.flags == (NODE_POWER_GAPS,)  # no poll for 4 s


def test_under_one_update_period_the_node_energy_is_withheld_and_flagged():
    node = _polled([BmcSample(watts=400.0)] * 4, [0, 1, 2, 3], declared=2.0)
    window = node.window(1.0, 2.5)  # 1.5 s of a BMC that updates every 2 s
    assert window.energy is None and NODE_WINDOW_TOO_SHORT in window.flags
    assert node.window(0.0, 10.0).energy is not None  # five updates: given


def test_failed_polls_flag_the_window_and_a_window_before_the_first_poll_has_none():
    node = _polled([BmcSample(watts=400.0), BmcError("GET ...: HTTP 503"), BmcSample(watts=400.0)], [0, 1, 2])
    assert NODE_POWER_GAPS in node.window(0.0, 2.0).flags
    assert node.window(-1.0, 2.0).energy is None


def test_the_update_period_is_the_declared_one_else_the_observed_changes():
    assert _polled([BmcSample(watts=1.0)], [0], declared=2.0).update_s == 2.0
    changing = [BmcSample(watts=w) for w in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6)]
    assert _polled(changing, range(11), declared=None).update_s == pytest.approx(2.0)  # changes every 2 polls


def test_the_poll_thread_never_stalls_stop():
    class Stuck(FakeClient):
        def sample(self) -> BmcSample:
            if self.answers:
                return self.answers.pop(0)
            time.sleep(30)  # a BMC that stopped answering (pyghmi retries for ~30 s)
            return BmcSample(watts=1.0)

    node = NodePower(Stuck([BmcSample(watts=1.0)]), 1.0, "fake://bmc")
    node.start()
    started = time.monotonic()
    time.sleep(1.2)
    node.stop()
    assert time.monotonic() - started < 3.0


# --- configuration and credentials --------------------------------------------------------------

ENV = {"WATTBENCH_BMC_USERNAME": USER, "WATTBENCH_BMC_PASSWORD": PASSWORD}


def test_a_spec_names_protocol_host_and_port_and_never_shows_the_password():
    target = parse_spec("redfish://bmc.example:8443", ENV)
    assert (target.protocol, target.host, target.port, target.tls) == ("redfish", "bmc.example", 8443, True)
    assert parse_spec("ipmi://10.0.0.5", ENV).port == 623 and parse_spec("redfish+http://h", ENV).base_url == "http://h:80"
    assert PASSWORD not in repr(target) and PASSWORD not in str(target.credentials)


@pytest.mark.parametrize(
    ("spec", "env", "said"),
    [
        (f"redfish://{USER}:{PASSWORD}@bmc", ENV, "the URL holds credentials"),
        ("snmp://bmc", ENV, "unknown scheme 'snmp'"),
        ("redfish://bmc", {}, "no BMC credentials"),
        ("ipmi://bmc:99999", ENV, "port is not a number"),
        ("no-such-file.toml", ENV, "neither a URL nor a file"),
    ],
)
def test_a_wrong_spec_is_one_line_naming_what_is_valid(spec, env, said):
    with pytest.raises(NodeConfigError, match=said) as caught:
        parse_spec(spec, env)
    assert PASSWORD not in str(caught.value) and "\n" not in str(caught.value)


def test_a_credentials_file_others_can_read_is_refused_and_a_private_one_is_used(tmp_path):
    secret = tmp_path / "bmc.toml"
    secret.write_text(f'username = "{USER}"\npassword = "{PASSWORD}"\n')
    secret.chmod(0o644)
    config = tmp_path / "node.toml"
    config.write_text('url = "redfish://bmc"\ncredentials = "bmc.toml"\npoll_s = 2\n')
    with pytest.raises(NodeConfigError, match="can be read by others .*chmod 600"):
        parse_spec(str(config), {})
    secret.chmod(0o600)
    target = parse_spec(str(config), {})
    assert target.credentials.password == PASSWORD and target.credentials.origin == str(secret) and target.poll_s == 2.0
    config.write_text('url = "redfish://bmc"\npoll_s = 0.2\n')
    with pytest.raises(NodeConfigError, match="poll_s 0.2 is under 1.0 s"):
        parse_spec(str(config), ENV)


# --- the merge counts each node once ----------------------------------------------------------


def _node(watts: float) -> Energy:
    return Energy.parse(
        {"joules": watts * 10, "avg_watts": watts, "source": "redfish_energy", "boundary": "node", "duration_s": 10.0}
    )


def test_a_merge_counts_each_nodes_energy_once():
    record = CaseRecord.started("c", "matmul", {}, "cuda:0", "ok")
    records = {0: record.but(node_energy=_node(900.0)), 1: record, 2: record.but(node_energy=_node(1100.0)), 3: record}
    keys = {0: ("a", "gpu-0"), 1: ("a", "gpu-1"), 2: ("b", "gpu-0"), 3: ("b", "gpu-1")}
    job = _job_node_energy(records, keys)
    assert job.joules == pytest.approx(20_000.0) and job.avg_watts == pytest.approx(2000.0) and job.boundary == "node"
    assert job.scope == "job: each node's once (2 nodes), summed"
    assert _job_node_energy({**records, 2: record}, keys) is None  # node b unmeasured: no job figure


# --- end to end over the protocols ---------------------------------------------------------------


@pytest.fixture
def redfish_service():
    pytest.importorskip("redfish", reason="the redfish client is not installed (make test installs it; its install failed)")
    from tests.node.redfish_service import RedfishService

    services = []

    def start(profile: str = "energy", watts=(300, 900) * 20, period_s: float = 1.0):
        services.append(RedfishService(USER, PASSWORD, list(watts), period_s, profile))
        return services[-1]

    yield start
    for service in services:
        service.close()


@pytest.mark.parametrize(
    ("profile", "source"),
    [
        ("energy", "redfish_energy"),
        ("power", "redfish_power"),
        ("supplies", "redfish_psu_input_power"),
        ("legacy", "redfish_power_control"),
    ],
)
def test_redfish_reads_the_best_resource_the_bmc_serves(redfish_service, profile, source):
    service = redfish_service(profile, watts=[640.0])
    node = open_node_power(service.url, env=dict(ENV))
    try:
        assert node.client.source == source
        node.poll()
        assert node._polls[-1].sample in (BmcSample(watts=640.0), BmcSample(energy_j=0.0))
    finally:
        node.stop()
    assert not service.tokens  # logged out


def _wattbench(args, env, **kw):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, **kw
    )


def test_a_run_records_node_energy_beside_device_energy_and_the_report_shows_both(redfish_service, tmp_path):
    service = redfish_service("energy")  # 300 W and 900 W in turn, a second each: it changes inside the window
    secret = tmp_path / "bmc.toml"
    secret.write_text(f'username = "{USER}"\npassword = "{PASSWORD}"\n')
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTBENCH_BMC")}
    env.update(WATTBENCH_BMC_CREDENTIALS=str(secret), PYTHONPATH=str(ROOT))
    out = tmp_path / "out"
    args = ["run", "matmul", "-p", "size=64", "-p", "dtype=float32", "--min-time", "6", "--repeats", "3", "--no-isolate"]
    seen: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "bench", *args, "--nominal-watts", "50", "--node-power", service.url, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        while proc.poll() is None:  # what `ps` shows of the run and its children, environments too, while it runs
            tree = [proc.pid, *(p.pid for p in _children(proc.pid))]
            listing = ["ps", "eww", "-o", "args", "-p", ",".join(map(str, tree))]
            seen.append(subprocess.run(listing, capture_output=True, text=True).stdout)
            time.sleep(0.5)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    (path,) = out.glob("*.json")
    text = path.read_text()
    doc = json.loads(text)
    described = doc["run"]["node_power"]
    assert described["source"] == "redfish_energy" and described["boundary"] == "node" and described["update_s"] == 1.0
    (case,) = doc["cases"]
    device, node = case["energy"], case["node_energy"]
    assert device["boundary"] == "device" and node["boundary"] == "node" and node["source"] == "redfish_energy"
    assert node["duration_s"] == pytest.approx(device["duration_s"], abs=0.05)  # the same window
    assert 300.0 < node["avg_watts"] < 900.0  # both levels inside it
    assert NODE_WINDOW_TOO_SHORT not in case["flags"]
    report = _wattbench(["report", str(path)], env).stdout
    assert "Node power" in report and "node power: redfish_energy, the whole node from its BMC (boundary node)" in report
    assert f"{node['avg_watts']:.1f} W" in report
    for where in (text, stdout, stderr, *seen):  # the result file, the log lines, `ps`
        assert PASSWORD not in where and USER not in where.replace(str(secret), "")
    assert any("--node-power" in s for s in seen)  # ps did see the run


def _children(pid: int) -> list:
    """The process's descendants now ([] once it has gone). Only these are looked at: other
    processes on the machine (another checkout's tests) may hold the test password themselves."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_the_library_logs_no_credential_even_at_debug(redfish_service, caplog):
    service = redfish_service("power")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("redfish").setLevel(logging.DEBUG)
        node = open_node_power(service.url, env=dict(ENV))
        node.poll()
        node.stop()
    tokens = [headers.get("X-Auth-Token") for _, _, headers, _ in service.requests if headers.get("X-Auth-Token")]
    assert tokens and PASSWORD not in caplog.text and not any(t in caplog.text for t in tokens)


def test_monitor_flags_a_window_shorter_than_the_bmc_update(redfish_service):
    service = redfish_service("power")
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    result = _wattbench(["monitor", "--json", "--node-power", service.url, "--", "sleep", "0.3"], env)
    node = json.loads(result.stdout)["node"]
    assert node["energy"] is None and NODE_WINDOW_TOO_SHORT in node["flags"] and node["update_s"] == 1.0
    table = _wattbench(["monitor", "--node-power", service.url, "--", "sleep", "0.3"], env).stdout
    assert "- (window under one BMC update)" in table and "[node, updates every 1 s]" in table


def test_a_bmc_that_refuses_the_credentials_is_one_line_exit_2(redfish_service):
    service = redfish_service("power")
    env = {**os.environ, "WATTBENCH_BMC_USERNAME": USER, "WATTBENCH_BMC_PASSWORD": "wrong", "PYTHONPATH": str(ROOT)}
    result = _wattbench(["monitor", "--node-power", service.url, "--", "true"], env)
    assert (
        result.returncode == 2 and result.stderr.count("\n") == 1 and "wattbench: error: --node-power: Redfish" in result.stderr
    )
    assert "wrong" not in result.stderr


@pytest.fixture
def ipmi_bmc(tmp_path):
    pytest.importorskip("pyghmi", reason="pyghmi is not installed (make test installs it; its install failed)")
    port_file = tmp_path / "port"
    env = {**os.environ, "SIM_BMC_USER": USER, "SIM_BMC_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    # 400 W and 1000 W in turn, a second each: the reading changes inside any window of seconds
    trace = ",".join(["400,1000"] * 60) + "@1.0"
    proc = subprocess.Popen([sys.executable, "-m", "tests.node.ipmi_bmc", str(port_file), trace], cwd=ROOT, env=env)
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"ipmi://127.0.0.1:{port_file.read_text()}"
    proc.kill()
    proc.wait()


def test_ipmi_dcmi_power_reading_over_rmcp_plus(ipmi_bmc):
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    result = _wattbench(["monitor", "--json", "--node-power", ipmi_bmc, "--", "sleep", "5.5"], env)
    assert result.returncode == 0, result.stderr
    node = json.loads(result.stdout)["node"]
    assert node["source"] == "ipmi_dcmi_power" and node["averaging_s"] == 1.0 and node["boundary"] == "node"
    energy = node["energy"]
    assert energy["boundary"] == "node" and energy["duration_s"] >= 5.5 and energy["samples"] >= 5
    # The BMC reads 400 W from the log-in's poll (just before the window), then 1000, 400, 1000,
    # 400, 1000 W at 1-5 s and 400 W at 6 s. Linear between polls: 0-1 s 700 W, 1-5 s 4 x 700,
    # 5-5.5 s (1000 + 700) / 2 x 0.5 = 425 J; (700 + 2800 + 425) J / 5.5 s = 713.6 W. A poll
    # stalled or missed would move it by tens of watts and flag node_power_gaps.
    assert abs(energy["avg_watts"] - 713.6) < 20.0, energy
    assert [w for _, w in energy["trace"]][:5] == [1000.0, 400.0, 1000.0, 400.0, 1000.0]
    assert NODE_POWER_GAPS not in node["flags"]
    assert NODE_WINDOW_TOO_SHORT not in node["flags"]  # 5.5 s of a 1 s BMC
    bad = _wattbench(["monitor", "--node-power", ipmi_bmc, "--", "true"], {**env, "WATTBENCH_BMC_PASSWORD": "nope"})
    assert bad.returncode == 2 and "Incorrect password" in bad.stderr and "nope" not in bad.stderr


def test_an_ipmi_bmc_that_never_answers_is_one_line_within_the_timeout_and_leaves_no_reader(tmp_path):
    pytest.importorskip("pyghmi", reason="pyghmi is not installed (make test installs it; its install failed)")
    import psutil

    from bench.device.bmc import connect

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # takes the packets, answers none
        silent.bind(("127.0.0.1", 0))
        config = tmp_path / "node.toml"
        config.write_text(f'url = "ipmi://127.0.0.1:{silent.getsockname()[1]}"\ntimeout_s = 1\n')
        started = time.monotonic()
        with pytest.raises(BmcError, match=r"^IPMI BMC at 127\.0\.0\.1:\d+: no session within 1 s$"):
            connect(parse_spec(str(config), ENV))
        # pyghmi alone would retry its login for about 30 s; the reader is killed at the deadline
        # (1 s after its start, which takes well under a second here; 5 s leaves a busy CI room)
        assert time.monotonic() - started < 5.0
    assert not [p for p in psutil.Process().children(recursive=True) if "bench.device.bmc.ipmi" in " ".join(p.cmdline())]


def test_the_ipmi_reader_gets_credentials_on_stdin_only(ipmi_bmc, monkeypatch, tmp_path):
    import psutil

    from bench.device.bmc import connect

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)  # where a user would keep them: not passed on to the reader
    impostor = tmp_path / "bench"  # a folder of the same name where the run is started: never the reader's code
    impostor.mkdir()
    (impostor / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # as an installed package: on the path, not put first
    client = connect(parse_spec(ipmi_bmc, ENV))
    assert not (tmp_path / "imported").exists()
    try:
        (reader,) = [p for p in psutil.Process().children() if "bench.device.bmc.ipmi" in " ".join(p.cmdline())]
        shown = " ".join(reader.cmdline()) + json.dumps(reader.environ())
        assert PASSWORD not in shown and USER not in shown
        assert client.sample().watts in (400.0, 1000.0) and client.averaging_s == 1.0
    finally:
        client.close()
    assert not reader.is_running()


def test_a_late_ipmi_answer_is_skipped_and_a_silent_reader_times_out():
    from bench.device.bmc.ipmi import DcmiClient

    answers = 'print(\'{"id": 1, "watts": 5.0}\'); print(\'{"id": 2, "watts": 7.0, "averaging_s": 1.0}\')'
    script = f"import sys; sys.stdin.readline(); {answers}; sys.stdout.flush(); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    client = DcmiClient(child, "IPMI BMC at test:623", 0.5)
    client._asked = 1  # request 1 timed out earlier; its answer comes first and is not request 2's
    assert client.sample().watts == 7.0 and client.averaging_s == 1.0
    with pytest.raises(BmcError, match="^no answer within 0.5 s$"):
        client.sample()
    client.close()
    assert child.poll() == 0
    with pytest.raises(BmcError, match="the IPMI reader has exited"):
        client.sample()  # after close(): the poll records it, as any BMC error


def _fake_reader(script: str):
    from bench.device.bmc.ipmi import DcmiClient

    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return DcmiClient(child, "IPMI BMC at test:623", 2.0)


def test_a_reader_that_fails_or_exits_is_said_in_one_line():
    crashed = _fake_reader('import sys; sys.stdin.readline(); print(\'{"crash": "KeyError: 7"}\', flush=True)')
    with pytest.raises(BmcError, match="^the IPMI reader failed: KeyError: 7$"):
        crashed.sample()
    crashed.close()
    gone = _fake_reader("import sys; sys.stdin.readline(); sys.exit(3)")
    started = time.monotonic()
    with pytest.raises(BmcError, match=r"^the IPMI reader has exited \(3\)$"):
        gone.sample()
    assert time.monotonic() - started < 1.5  # its end is seen, not waited out to the timeout
    gone.close()


def test_the_reader_sends_its_own_failure_back_as_a_line():
    pytest.importorskip("pyghmi", reason="pyghmi is not installed (make test installs it; its install failed)")
    from bench.device.bmc.ipmi import CHILD_MAIN, PACKAGE_ROOT

    done = subprocess.run([sys.executable, "-P", "-c", CHILD_MAIN, PACKAGE_ROOT], input=b"not a target\n", capture_output=True)
    (line,) = done.stdout.decode().splitlines()
    assert json.loads(line)["crash"].startswith("JSONDecodeError: ")


def test_the_reader_ignores_ctrl_c_meant_for_the_run(ipmi_bmc):
    import signal

    from bench.device.bmc import connect

    client = connect(parse_spec(ipmi_bmc, ENV))
    try:
        reader = client._child
        assert os.getpgid(reader.pid) != os.getpgrp()  # Ctrl-C at a terminal signals the run's group, not its
        os.kill(reader.pid, signal.SIGINT)
        time.sleep(0.2)
        assert reader.poll() is None and client.sample().watts in (400.0, 1000.0)
    finally:
        client.close()


@pytest.mark.parametrize(("rank", "per_case"), [(None, 1), (RankInfo(4, 0, 8, 4, 1, 2), 4)])
def test_the_run_records_the_nodes_gpus_beside_those_a_case_ran_on(redfish_service, fake_nvml, monkeypatch, rank, per_case):
    from bench.measure.session import RunOptions, _node_power
    from tests.fake_nvml import FakeGpu

    fake_nvml.gpus = [FakeGpu(uuid=f"GPU-{i}1111111-2222-3333-4444-555555555555") for i in range(8)]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    doc: dict = {"run": {}}
    node = _node_power(RunOptions(node_power=redfish_service("power").url), rank, doc, "node-b")
    assert node is not None
    node.stop()
    described = doc["run"]["node_power"]
    assert described["gpus_on_node"] == 8 and described["gpus_per_case"] == per_case
