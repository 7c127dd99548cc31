"""Kill -9 recovery: the short chaos schedule of benchmarks/chaos.py against the real broker."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

CHAOS = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py"


def load_chaos():
    spec = importlib.util.spec_from_file_location("chaos", CHAOS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigterm_sigint_and_three_sigkills_lose_nothing_and_restore_state_exactly(tmp_path):
    out = tmp_path / "chaos.json"
    assert load_chaos().main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kills"] >= 3 and result["terms"] == 2
    assert result["lost"] == 0
    assert result["clean_stop_exit_codes"] == [0, 0] and result["final_exit_code"] == 0
    assert result["duplicates"] <= result["max_duplicates_allowed"]
    assert result["forecasts_after_final_restart"] > 0
    assert result["max_rel_diff_vs_shadow"] <= 1e-5
