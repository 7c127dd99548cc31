"""A pipeline's model history: versions kept with their scores, pruned to the newest N; rollback requests."""

import math

import pytest
import torch

from forecaster.build import model_spec, seeded_model
from forecaster.errors import ForecasterError
from forecaster.learning.history import ModelHistory
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster

from support import make_pipeline


def model_of(seed):
    """Weights of the test pipeline's model, a different set per seed."""
    torch.manual_seed(seed)
    return Forecaster(model_spec(make_pipeline()))


def test_each_version_is_kept_with_its_source_and_scores_newest_first(tmp_path):
    history = ModelHistory(tmp_path, keep=5)
    history.add(model_of(1), 1, "promoted over version 0", {"champion_loss": 0.5, "challenger_loss": 0.4})
    history.add(model_of(2), 2, "promoted over version 1", {"champion_loss": 0.4, "challenger_loss": 0.3})

    kept = history.versions()

    assert [k.version for k in kept] == [2, 1]
    assert kept[1].source == "promoted over version 0" and kept[1].scores["challenger_loss"] == 0.4
    assert kept[0].describe() == "held-out loss 0.3 (was 0.4)"
    engine = Engine(make_pipeline(), seeded_model(make_pipeline()))
    model, _ = history.load(1, engine)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model_of(1).state_dict().values()))


def test_only_the_newest_versions_are_kept_and_the_files_of_older_ones_removed(tmp_path):
    history = ModelHistory(tmp_path, keep=3)
    for version in range(1, 8):
        history.add(model_of(version), version, "promoted")

    assert [k.version for k in history.versions()] == [7, 6, 5]
    assert sorted(p.name for p in tmp_path.glob("v*.pt")) == ["v5.pt", "v6.pt", "v7.pt"]
    with pytest.raises(ForecasterError, match=r"version 2 is not kept \(kept: 7, 6, 5\)"):
        history.load(2, Engine(make_pipeline(), seeded_model(make_pipeline())))


def test_keep_zero_keeps_nothing(tmp_path):
    history = ModelHistory(tmp_path / "models", keep=0)
    history.add(model_of(1), 1, "promoted")
    assert history.versions() == [] and not (tmp_path / "models").exists()


def test_a_new_version_is_above_the_serving_one_and_every_one_kept(tmp_path):
    history = ModelHistory(tmp_path, keep=5)
    assert history.next_version(3) == 4
    history.add(model_of(1), 9, "promoted")
    assert history.next_version(3) == 10 and history.next_version(12) == 13


def test_a_rollback_request_is_seen_until_done_and_an_unreadable_one_is_dropped(tmp_path):
    history = ModelHistory(tmp_path, keep=5)
    assert history.requested() is None

    history.request(3)
    assert history.pending() == 3 and history.pending() == 3
    history.done()
    assert history.pending() is None

    history.request_path.write_text("{not json")
    assert history.pending() is None and not history.request_path.exists()


def test_a_running_loop_reads_the_request_file_at_most_every_few_seconds(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("forecaster.learning.history.time.monotonic", lambda: clock[0])
    history = ModelHistory(tmp_path, keep=5)
    assert history.requested() is None
    history.request(3)

    clock[0] += 1.0
    assert history.requested() is None  # not looked at yet
    clock[0] += 1.0
    assert history.requested() == 3


def test_scores_that_are_not_finite_are_kept_as_such(tmp_path):
    history = ModelHistory(tmp_path, keep=5)
    history.add(model_of(1), 1, "promoted", {"champion_loss": 0.5, "challenger_loss": 0.4, "expert_loss": math.nan})
    assert math.isnan(history.versions()[0].scores["expert_loss"])


def test_a_folder_that_cannot_be_written_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / "models").write_text("a file where the folder should be")
    history = ModelHistory(tmp_path / "models", keep=5)

    history.add(model_of(1), 1, "promoted")

    assert "could not keep version 1" in caplog.text
