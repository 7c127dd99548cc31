"""Members come and go on one pipeline: the short schedule of benchmarks/scaleout.py against the real broker."""

import json

import pytest

from support import benchmark

pytestmark = pytest.mark.kafka


def test_a_sigkill_and_a_stale_owner_lose_nothing_and_every_forecast_matches_one_uninterrupted_member(tmp_path):
    out = tmp_path / "scaleout.json"
    assert benchmark("scaleout").main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kills"] == 1 and result["stale_owner_episodes"] == 1
    assert result["lost"] == 0
    assert result["forecasts"] >= result["records"] > 0
    assert result["duplicates"] <= result["max_duplicates_allowed"]
    assert result["compared"] == result["forecasts"]  # every forecast, duplicates included, was checked
    assert result["max_rel_diff_vs_shadow"] <= 1e-5
    assert result["final_exit_codes"] == [0, 0]  # the surviving member and the reference stop cleanly
