"""recommender/process_memory.py: the peak RSS a training phase reports, reset between phases."""

from __future__ import annotations

import sys

import pytest

from recommender import process_memory

MIB = process_memory.MIB


def test_the_peak_covers_an_allocation_and_a_reset_forgets_it():
    before = process_memory.peak_rss_bytes()
    block = bytearray(300 * MIB)  # zero-filled: every page is touched, so resident
    block[::4096] = b"x" * len(block[::4096])
    during = process_memory.peak_rss_bytes()
    assert during >= before
    assert during >= 300 * MIB
    del block
    if not sys.platform.startswith("linux"):
        pytest.skip("only Linux can reset the peak (/proc/self/clear_refs)")
    assert process_memory.peak_rss_reset() is True
    assert process_memory.peak_rss_bytes() < during - 200 * MIB
