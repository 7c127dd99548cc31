"""How many CPU threads a computation takes, by its size (forecaster/serving/threads.py)."""

import torch

from forecaster.serving import threads


def test_a_small_computation_takes_one_thread_and_a_large_one_all_it_may():
    assert threads.for_rows(threads.PARALLEL_ROWS - 1, most=8) == 1
    assert threads.for_rows(threads.PARALLEL_ROWS, most=8) == 8


def test_inside_the_count_is_the_one_asked_for_and_after_it_the_larger_of_the_two():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.cpu_threads(1, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.cpu_threads(3, torch.device("cpu")):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 3  # never lowered by leaving: another loop may be stepping on more
    finally:
        torch.set_num_threads(before)


def test_off_the_cpu_the_count_is_left_alone():
    before = torch.get_num_threads()
    with threads.cpu_threads(before + 1, torch.device("meta")):
        assert torch.get_num_threads() == before
