"""The named random streams: fixed values (changing one changes every result) and errors."""

import pytest

from ssl_bench.seeds import STREAMS, derive


def test_streams_keep_the_values_results_were_computed_with():
    # a change here changes every leaderboard row: it needs a new results version
    assert derive(3, "order", 2) == 3 * 1_000_003 + 2
    assert derive(3, "eval_init", 400) == 3 * 100_003 + 400
    assert derive(3, "eval_train", 20) == 23
    assert (derive(3, "augment"), derive(3, "heldout")) == (4, 5)
    assert derive(3, "subset") == derive(3, "init") == 3
    assert derive(3, "synthetic_test") == 1_000_006 and derive(3, "search_alpha_order") == 7922


def test_per_k_streams_differ_between_ks_and_seeds():
    values = {derive(s, "eval_init", k) for s in range(3) for k in (20, 100, 400, 1000, 5000)}
    assert len(values) == 15
    assert len({derive(0, "order", e) for e in range(100)}) == 100


def test_every_stream_says_what_it_drives_and_unknown_ones_are_named():
    assert all(why for _, why in STREAMS.values())
    with pytest.raises(KeyError, match="unknown random stream 'shuffle'.*augment"):
        derive(0, "shuffle")
