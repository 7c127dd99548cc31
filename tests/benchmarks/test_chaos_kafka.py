"""Kill -9 recovery: the short chaos schedule of benchmarks/chaos.py against the real broker."""

import json

import pytest

from support import benchmark

pytestmark = pytest.mark.kafka


def test_sigterm_sigint_and_three_sigkills_lose_nothing_and_restore_state_exactly(tmp_path):
    out = tmp_path / "chaos.json"
    assert benchmark("chaos").main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kills"] >= 3 and result["terms"] == 2
    assert result["lost"] == 0
    assert result["clean_stop_exit_codes"] == [0, 0] and result["final_exit_code"] == 0
    assert result["duplicates"] <= result["max_duplicates_allowed"]
    assert result["forecasts_after_final_restart"] > 0
    assert result["max_rel_diff_vs_shadow"] <= 1e-5
