"""The monthly and quarterly held-out sets: on the calendar's grid as the wheel gives them, scored a year back."""

from datetime import UTC, datetime

import numpy as np
import pytest

from support import benchmark

generalisation = benchmark("generalisation")


def dates(panel) -> list[str]:
    return [datetime.fromtimestamp(t, UTC).date().isoformat() for t in panel.times]


@pytest.fixture(scope="module")
def employment():
    return generalisation.us_employment()


def test_us_employment_is_148_series_on_every_month_start_from_1990_to_september_2019(employment):
    assert len(employment.keys) == 148 and (employment.cadence, employment.horizon) == ("1M", 18)
    assert dates(employment) == [f"{y}-{m:02d}-01" for y in range(1990, 2020) for m in range(1, 13)][:-3]
    begun_late = np.isnan(employment.inputs[0])
    assert begun_late.sum() == 2  # the two sectors that begin in 2001 are missing before, never filled with zeros
    assert np.isnan(employment.inputs[: 12 * 11, begun_late]).all()
    assert not np.isnan(employment.inputs[12 * 11 :, begun_late]).any()


def test_visnights_is_20_regions_on_every_quarter_start_from_1998_to_2016():
    nights = generalisation.visnights()
    assert len(nights.keys) == 20 and (nights.cadence, nights.horizon) == ("1Q", 8)
    assert dates(nights) == [f"{y}-{m:02d}-01" for y in range(1998, 2017) for m in (1, 4, 7, 10)]
    assert not np.isnan(nights.inputs).any()


def test_the_seasonal_naive_of_a_monthly_panel_is_the_same_month_a_year_before(employment):
    origins = np.array([200, 250])
    forecasts = generalisation.baseline_forecasts(employment, origins)
    assert set(forecasts) == {"persistence", "seasonal_naive_12", "seasonal_level_12"}
    h = np.arange(1, 19)
    back = origins[:, None] + h[None, :] - 12 * np.ceil(h / 12).astype(int)[None, :]  # (O, H)
    expected = employment.inputs[back].transpose(0, 2, 1)  # (O, N, H)
    np.testing.assert_array_equal(forecasts["seasonal_naive_12"], expected)
