"""Fuzzing the configuration through the real command: random keys of `--cfg job`, random
values of the wrong type or range. Every outcome must be a finished run (exit 0) or one
`ssl-bench: error:` line with exit status 2: never a traceback, never a hang.

The per-case timeout belongs to the harness (a case that passes it is a hang, the defect
looked for), not to a timing assertion. Slow tier: every case starts a process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ssl_bench.cli import CONF_DIR

pytestmark = pytest.mark.slow

# a run of a few seconds when no override breaks it: tiny synthetic data, 2 steps everywhere
BASE = ["profile=smoke", "data=synthetic", "data.num_train=200", "data.num_test=100", "progress=false",
        "train.epochs=1", "train.steps_per_epoch=2", "train.pretext_eval_images=20",
        "eval.labels_per_class=[2]", "eval.min_steps=2", "eval.max_steps=2", "eval.probes.enabled=false",
        "check_labels_per_class=[2]"]
CASE_TIMEOUT_S = 240


def _leaf_keys() -> list[str]:
    """Every setting of `--cfg job` (nested keys joined by dots), minus the `_target_` plumbing."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=BASE)
    keys: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif not prefix.split(".")[-1].startswith("_"):
            keys.append(prefix)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return sorted(keys)


KEYS = _leaf_keys()
WORD = st.text(alphabet="abcxyz_019", min_size=1, max_size=8)


def _render(value: object) -> str:
    """A value in Hydra's override grammar (strings quoted, so they stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    return repr(value)


WRONG_VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=0),         # out of range for counts and sizes
    st.integers(min_value=2**32, max_value=2**40),        # past every seed range
    st.sampled_from([0.5, -1.5, 1e-9, 1e12, float("nan"), float("inf"), -0.0]),
    st.booleans(), st.none(), WORD,
    st.lists(st.one_of(st.integers(-5, 5), WORD), max_size=3),
)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), WRONG_VALUES), min_size=1, max_size=2,
                unique_by=lambda kv: kv[0]))
def test_bad_overrides_end_in_one_clear_line_or_a_run(tmp_path_factory, pairs):
    work = tmp_path_factory.mktemp("fuzz")
    overrides = [f"{key}={_render(value)}" for key, value in pairs]
    command = [sys.executable, "-m", "ssl_bench", *BASE, f"paths.runs_dir={work / 'runs'}",
               f"paths.cache_dir={work / 'cache'}", *overrides]
    try:
        res = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung (no result after {CASE_TIMEOUT_S} s): {' '.join(overrides)}")
    where = f"{' '.join(overrides)} -> exit {res.returncode}\n{res.stderr[-2000:]}"
    if os.environ.get("SSL_BENCH_FUZZ_LOG"):  # every case and its outcome, for a report
        last = (res.stderr.strip().splitlines() or [""])[-1]
        with open(os.environ["SSL_BENCH_FUZZ_LOG"], "a") as log:
            log.write(f"{' '.join(overrides)}\texit {res.returncode}\t{last}\n")
    assert "Traceback" not in res.stderr, where
    assert res.returncode in (0, 2), where
    if res.returncode == 2:
        errors = [line for line in res.stderr.splitlines() if line.startswith("ssl-bench: error:")]
        assert len(errors) == 1, where
    else:
        assert "test accuracy %" in res.stdout or "already finished" in res.stdout, where
