"""The machine under the benchmark (tools.machine): the floor's arithmetic, CPU seconds, and `--load N`'s
processes started and stopped."""

from __future__ import annotations

import os
import time

import pytest
from procs import alive

from codecomplete.tools.machine import _line, cpu_load, cpu_seconds, floor_ms


def _rates(prompt_a: float, prompt_b: float, gen_a: float, gen_b: float) -> dict:
    flat = {"prompt_ms_per_token": {"a": prompt_a, "b": prompt_b}, "generate_ms_per_token": {"a": gen_a, "b": gen_b}}
    slow = {"prompt_ms_per_token": {"a": 2 * prompt_a, "b": prompt_b}, "generate_ms_per_token": {"a": 2 * gen_a,
                                                                                                 "b": gen_b}}
    return {"flash_attn_off": flat, "flash_attn_on": slow}


def test_floor_counts_each_token_at_its_position_and_takes_the_cheaper_setting() -> None:
    rates = _rates(1.0, 0.0, 10.0, 0.0)
    assert floor_ms(1000, 100, 32, rates) == pytest.approx(100 * 1.0 + 32 * 10.0)
    # 0.001 ms more per position: the 10 evaluated tokens sit at positions 90..99, the 2 generated at 100, 101
    rising = _rates(1.0, 0.001, 10.0, 0.001)
    assert floor_ms(100, 10, 2, rising) == pytest.approx(10 * 1.0 + 0.001 * sum(range(90, 100))
                                                         + 2 * 10.0 + 0.001 * (100 + 101))
    assert floor_ms(None, 5, 0, rates) == pytest.approx(5.0)  # no prompt length: the evaluated tokens from 0
    assert floor_ms(100, None, 2, rates) is None and floor_ms(100, 10, 2, None) is None


def test_line_fit() -> None:
    assert _line([(0, 1.0), (10, 2.0), (20, 3.0)]) == {"a": 1.0, "b": 0.1}
    assert _line([(5, 2.0)]) == {"a": 2.0, "b": 0.0}
    assert _line([(0, 2.0), (10, 1.0)])["b"] == 0.0  # noise never makes later tokens cheaper


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc")
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = cpu_seconds(os.getpid())
    assert after is not None and after >= before + 0.05
    assert cpu_seconds(None) is None and cpu_seconds(2**22 + 12345) is None


@pytest.mark.slow
def test_load_starts_busy_processes_and_stops_them() -> None:
    with cpu_load(2) as pids:
        assert len(pids) == 2
        time.sleep(0.5)
        used = [cpu_seconds(p) for p in pids]
        assert all(u is not None and u > 0.05 for u in used)
    time.sleep(0.2)
    for pid in pids:
        assert not alive(pid)
    with cpu_load(0) as none:
        assert none == []
