"""The test seams of bench/testing_hooks.py: each hook is off unless its variable is set, fires only
where it says, and no other module of the package reads a test switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import testing_hooks
from bench.errors import UsageError

BENCH = Path(testing_hooks.__file__).resolve().parent


def test_the_fault_hook_fires_only_on_its_rank_case_and_first_round():
    env = {testing_hooks.FAULT_ENV: "exit:rank=1:case=2"}
    assert testing_hooks.fault(1, 2, 1, {}) is None
    assert testing_hooks.fault(1, 2, 1, env) == testing_hooks.Fault("exit", 1, 2)
    assert testing_hooks.fault(0, 2, 1, env) is None
    assert testing_hooks.fault(1, 3, 1, env) is None
    assert testing_hooks.fault(1, 2, 2, env) is None
    with pytest.raises(UsageError, match="KIND:rank=R:case=I"):
        testing_hooks.fault(1, 2, 1, {testing_hooks.FAULT_ENV: "setup:rank=1"})


def test_a_setup_fault_fails_the_next_set_up_once():
    testing_hooks.before_setup()  # nothing armed: nothing happens
    testing_hooks.Fault("setup", 0, 0).fire()
    assert testing_hooks.setup_failure_armed()
    with pytest.raises(RuntimeError, match=r"injected set-up failure \(WATTBENCH_TEST_FAULT\)"):
        testing_hooks.before_setup()
    assert not testing_hooks.setup_failure_armed()
    testing_hooks.before_setup()


def test_the_simulated_operating_gpu_is_off_unless_set():
    assert testing_hooks.simulated_operating_gpu({}) is None
    assert testing_hooks.simulated_operating_gpu({testing_hooks.TEST_GPU_ENV: ""}) is None
    assert testing_hooks.simulated_operating_gpu({testing_hooks.TEST_GPU_ENV: "GPU-1"}) == "GPU-1"


def test_no_other_module_reads_a_test_switch():
    readers = [
        path.relative_to(BENCH.parent)
        for path in BENCH.rglob("*.py")
        if path.name != "testing_hooks.py" and "WATTBENCH_TEST_" in path.read_text()
    ]
    assert readers == []
