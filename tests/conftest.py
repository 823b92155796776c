"""Shared test setup: small thread count (CI has 2 cores) and hypothesis profiles."""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("SID_TEST_THREADS", "2")))
settings.register_profile("sid", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("sid")


@pytest.fixture
def single_thread():
    """One torch thread for a test (tiny networks lose time to threads, and timings stall less when the cores are
    busy); the suite's count is restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
