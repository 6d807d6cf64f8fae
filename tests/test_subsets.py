import pytest
import torch

from ssl_bench.data.subsets import balanced_subset, stratified_sample
from ssl_bench.errors import UserError


@pytest.fixture
def labels():
    # 10 classes of unequal size (30..39), shuffled
    labels = torch.cat([torch.full((30 + c,), c) for c in range(10)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


def test_class_balanced(labels):
    idx = balanced_subset(labels, 7, seed=0)
    assert len(idx) == 70
    assert len(set(idx.tolist())) == 70
    assert torch.bincount(labels[idx], minlength=10).tolist() == [7] * 10


def test_reproducible_for_a_seed_and_different_across_seeds(labels):
    a, b = balanced_subset(labels, 7, seed=3), balanced_subset(labels, 7, seed=3)
    assert torch.equal(a, b)
    c = balanced_subset(labels, 7, seed=4)
    assert set(a.tolist()) != set(c.tolist())


def test_not_the_first_k(labels):
    first_k = torch.cat([torch.nonzero(labels == c).squeeze(1)[:7] for c in range(10)])
    draws = [set(balanced_subset(labels, 7, seed=s).tolist()) for s in range(3)]
    assert all(d != set(first_k.tolist()) for d in draws)


def test_subsets_are_nested_across_k(labels):
    small = set(balanced_subset(labels, 5, seed=2).tolist())
    large = set(balanced_subset(labels, 20, seed=2).tolist())
    assert small < large


def test_bad_k(labels):
    with pytest.raises(UserError, match="smallest class has only 30"):
        balanced_subset(labels, 31, seed=0)
    with pytest.raises(UserError, match="must be positive"):
        balanced_subset(labels, 0, seed=0)


def test_stratified_sample_is_balanced(labels):
    idx = stratified_sample(labels, 100, seed=0)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10] * 10
