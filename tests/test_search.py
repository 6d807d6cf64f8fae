"""Architecture search (DARTS with a pretext loss): ops, genotypes, the α gradient, the loop,
the searched backbone in the normal pipeline, and the CLI's errors. Tiny nets, synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict
from torch import nn

from ssl_bench import load_backbone
from ssl_bench.backbone import ConvBackbone, frozen_stages, reset_parameters
from ssl_bench.errors import UserError, instantiate
from ssl_bench.run import run
from ssl_bench.search.architect import Architect, Batch, SearchModel, sgd_direction
from ssl_bench.search.genotype import (
    Genotype,
    derive,
    edge_offset,
    load_genotype,
    num_edges,
    save_genotype,
)
from ssl_bench.search.model import (
    SearchedBackbone,
    SearchNetwork,
    count_parameters,
    match_budget,
    searched_backbone,
)
from ssl_bench.search.ops import PRIMITIVES, MixedOp, make_op
from ssl_bench.search.search import read_log, run_search
from ssl_bench.tasks import DataFacts
from ssl_bench.tasks.layerwise import LayerwiseTask
from ssl_bench.tasks.rotation import RotationTask
from tests.conftest import PROJECT_ROOT

CPU = torch.device("cpu")
# a hand-written genotype of 2 nodes: every kind of operation and of input appears
GENOTYPE = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0), ("max_pool_3x3", 2)),
    reduce=(("skip_connect", 0), ("avg_pool_3x3", 1), ("sep_conv_5x5", 1), ("dil_conv_3x3", 2)))
TINY = {"channels": [4, 4, 8], "cells": [0, 0, 1]}


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_is_the_softmax_weighted_sum_of_its_candidates(stride):
    torch.manual_seed(0)
    mixed = MixedOp(4, stride).double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.double)  # odd size: stride-2 shapes must agree
    alpha = torch.randn(len(PRIMITIVES), dtype=torch.double)
    weights = torch.softmax(alpha, 0)
    reference = 0
    for name, op in zip(PRIMITIVES, mixed.ops):
        # the candidate as it stands alone (its own ReLU), with the mixed op's weights
        alone = make_op(name, 4, stride, affine=False, relu=True)
        if "pool" in name:
            alone = nn.Sequential(alone, nn.BatchNorm2d(4, affine=False))
        alone.double().load_state_dict(op.state_dict())
        out = alone(x)
        assert out.shape == (3, 4, 5, 5) if stride == 2 else out.shape == x.shape
        reference = reference + weights[PRIMITIVES.index(name)] * out
    torch.testing.assert_close(mixed(x, weights), reference)


def _tiny_net(**kw) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(**{**TINY, "nodes": 3, "stem_multiplier": 2, **kw})


def test_derived_genotype_is_valid_and_builds_a_network_for_32px():
    net = _tiny_net()
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.copy_(torch.randn_like(alpha))
            alpha[:, PRIMITIVES.index("none")] = 10.0  # the zero op is the strongest everywhere
    genotype = net.genotype()
    for kind in ("normal", "reduce"):
        cell = genotype.cell(kind)
        assert len(cell) == 2 * net.nodes  # two inputs per node
        for node in range(net.nodes):
            (op_a, in_a), (op_b, in_b) = cell[2 * node:2 * node + 2]
            assert "none" not in (op_a, op_b)
            assert in_a != in_b and 0 <= in_a < node + 2 and 0 <= in_b < node + 2
    genotype.validate()
    backbone = SearchedBackbone(genotype, channels=[6, 8, 10], cells=[1, 1, 1])
    assert isinstance(backbone, ConvBackbone)
    x = torch.randn(2, 3, 32, 32)
    assert backbone.features(x, "conv1").shape == (2, 3 * 6, 16, 16)  # nodes x C channels
    assert backbone.features(x, "conv2").shape == (2, 3 * 8, 8, 8)
    assert backbone.features(x, "conv3").shape == (2, 3 * 10, 8, 8)
    assert backbone(x).shape == (2, backbone.out_channels()) == (2, 30)
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, 30)  # tiles and patches too


def test_derivation_keeps_the_two_strongest_edges_with_their_strongest_op():
    nodes = 2
    alpha = torch.zeros(num_edges(nodes), len(PRIMITIVES))
    # node 2 reads 0 and 1; node 3: edge from 1 strongest (dil_conv_3x3), then from 2 (avg_pool)
    alpha[edge_offset(0) + 0, PRIMITIVES.index("sep_conv_5x5")] = 2.0
    alpha[edge_offset(0) + 1, PRIMITIVES.index("skip_connect")] = 1.0
    alpha[edge_offset(1) + 0, PRIMITIVES.index("none")] = 5.0  # strong zero: not an edge to keep
    alpha[edge_offset(1) + 1, PRIMITIVES.index("dil_conv_3x3")] = 3.0
    alpha[edge_offset(1) + 2, PRIMITIVES.index("avg_pool_3x3")] = 1.5
    genotype = derive(alpha, alpha, nodes)
    assert genotype.normal == (("sep_conv_5x5", 0), ("skip_connect", 1),
                               ("dil_conv_3x3", 1), ("avg_pool_3x3", 2))


@pytest.mark.parametrize("bad, message", [
    ({"normal": [["none", 0], ["skip_connect", 1]]}, "not one of"),
    ({"normal": [["sep_conv_3x3", 0], ["skip_connect", 2]]}, "earlier node"),
    ({"normal": [["sep_conv_3x3", 1], ["skip_connect", 1]]}, "both inputs"),
    ({"normal": [["sep_conv_3x3", 0]]}, "two"),
    ({"normal": [["conv_7x7", 0], ["skip_connect", 1]]}, "not one of"),
])
def test_malformed_genotypes_are_rejected(bad, message):
    good = GENOTYPE.to_dict()
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict({**good, "reduce": good["normal"][:2], **bad})


def test_genotype_file_round_trip_and_clear_errors(tmp_path):
    path = save_genotype(GENOTYPE, tmp_path, {"task": "rotation"})
    assert path.name == f"genotype_{GENOTYPE.digest()}.json"
    assert load_genotype(path) == GENOTYPE
    with pytest.raises(UserError, match="needs backbone.genotype"):
        load_genotype(None)
    with pytest.raises(UserError, match="no file"):
        load_genotype(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not a valid genotype"):
        load_genotype(broken)
    unnamed = tmp_path / "mine.json"
    unnamed.write_text(path.read_text())
    with pytest.raises(UserError, match=f"mine_{GENOTYPE.digest()}.json"):
        load_genotype(unnamed)
    edited = json.loads(path.read_text())
    edited["normal"][0][0] = "sep_conv_5x5"
    path.write_text(json.dumps(edited))
    with pytest.raises(UserError, match="content changed"):
        load_genotype(path)


def test_budget_matching_scales_widths_to_the_parameter_count():
    for budget in (20_000, 93_472):
        widths = match_budget(GENOTYPE, [16, 32, 64], [1, 1, 1], 3, budget)
        count = count_parameters(SearchedBackbone(GENOTYPE, widths, [1, 1, 1], 3))
        assert abs(count / budget - 1) < 0.1, (widths, count)


# ---- the α gradient ---------------------------------------------------------------------

def _architect_setup(nesterov: bool, primitives: tuple[str, ...] = PRIMITIVES):
    """A float64 search net + rotation head on 16-px images, weights after one real step."""
    torch.manual_seed(0)
    net = SearchNetwork(channels=[2, 2, 4], cells=[0, 0, 1], nodes=2, stem_multiplier=1,
                        primitives=primitives).double()
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.copy_(0.5 * torch.randn_like(alpha))
    task = RotationTask(net.out_channels(), (3, 16, 16)).double()
    model = SearchModel(net, task)
    arch = {id(p) for p in net.arch_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if id(p) not in arch], lr=0.1,
                          momentum=0.9, nesterov=nesterov, weight_decay=3e-4)

    def batch(seed: int) -> Batch:
        g = torch.Generator().manual_seed(seed)
        return Batch(*task.make_batch(torch.randn(4, 3, 16, 16, generator=g, dtype=torch.double), g))

    train, val = batch(1), batch(2)
    opt.zero_grad()  # one real step: momentum buffers exist, as they do mid-search
    model.loss(train).backward()
    opt.step()
    return net, model, opt, train, val


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_direction_is_the_step_the_optimiser_takes(nesterov):
    net, model, opt, train, _ = _architect_setup(nesterov)
    params = [p for p in opt.param_groups[0]["params"]]
    opt.zero_grad()
    model.loss(train).backward()
    directions, _ = sgd_direction(params, [p.grad for p in params], opt)
    before = [p.detach().clone() for p in params]
    opt.step()
    for b, p, d in zip(before, params, directions):
        torch.testing.assert_close(b - 0.1 * d, p.detach())


@pytest.mark.parametrize("nesterov", [False, True])
def test_second_order_alpha_gradient_matches_central_finite_differences(nesterov, monkeypatch):
    # Finite differences need a smooth loss: ReLU and max pooling are piecewise linear, and
    # a weight perturbation of 1e-4 already crosses some of their kinks in a tiny net. So
    # ReLU becomes softplus and max pooling leaves the search space for this check.
    softplus = F.softplus
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: softplus(x))
    smooth = tuple(p for p in PRIMITIVES if p != "max_pool_3x3")
    net, model, opt, train, val = _architect_setup(nesterov, smooth)
    xi = 0.5  # large, so the second-order term is far from negligible
    architect = Architect(model, opt, xi=xi)
    analytic, _ = architect.second_order_gradient(train, val, xi)
    first, _ = architect.first_order_gradient(val)

    def unrolled_val_loss() -> float:
        """L_val(w − ξ·d(w, α), α) at the current α: the function α's gradient is of."""
        weights = architect.weights
        grads = torch.autograd.grad(architect._loss(train, weights), weights, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
        directions, _ = sgd_direction(weights, grads, opt)
        with torch.no_grad():
            return float(architect._loss(val, [w - xi * d for w, d in zip(weights, directions)]))

    # central differences of that function along random directions u of α (all entries at
    # once): (f(α + h·u) − f(α − h·u)) / 2h against ⟨gradient, u⟩
    h, gen = 1e-5, torch.Generator().manual_seed(0)
    numeric, analytic_dots, first_dots = [], [], []
    for _ in range(6):
        u = [torch.randn(a.shape, generator=gen, dtype=a.dtype) for a in net.arch_parameters()]
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for a, d in zip(net.arch_parameters(), u):
                    a.add_(sign * h * d)
            values.append(unrolled_val_loss())
            with torch.no_grad():
                for a, d in zip(net.arch_parameters(), u):
                    a.sub_(sign * h * d)
        numeric.append((values[0] - values[1]) / (2 * h))
        analytic_dots.append(sum(float((g * d).sum()) for g, d in zip(analytic, u)))
        first_dots.append(sum(float((g * d).sum()) for g, d in zip(first, u)))
    numeric_v, analytic_v, first_v = (torch.tensor(x) for x in (numeric, analytic_dots, first_dots))
    error = (analytic_v - numeric_v).norm() / numeric_v.norm()
    assert error < 1e-3, error
    assert (first_v - numeric_v).norm() / numeric_v.norm() > 50 * error  # the term matters


def test_second_order_with_xi_zero_is_the_first_order_gradient():
    net, model, opt, train, val = _architect_setup(nesterov=False)
    architect = Architect(model, opt, xi=0.0)
    second, loss2 = architect.second_order_gradient(train, val, 0.0)
    first, loss1 = architect.first_order_gradient(val)
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    for a, b in zip(second, first):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---- the search loop -------------------------------------------------------------------

def _search_cfg(make_cfg, *overrides):
    from hydra import compose, initialize_config_dir

    from ssl_bench.cli import CONF_DIR

    base = make_cfg()  # the tmp paths of conftest, applied to the search config too
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("search", overrides=[
            f"paths.runs_dir={base.paths.runs_dir}", f"paths.cache_dir={base.paths.cache_dir}",
            "progress=false", "search=smoke", "profile=smoke", "data=synthetic", *overrides])


@pytest.mark.slow  # three search epochs, twice
@pytest.mark.parametrize("xi", [0.0, 0.01])
def test_search_lowers_the_pretext_loss(make_cfg, tiny_data, tmp_path, xi):
    steps = 6 if xi == 0 else 1  # second order: only that the loop runs it (3 passes a step)
    cfg = _search_cfg(make_cfg, "search.epochs=3", f"search.steps_per_epoch={steps}",
                      "search.batch_size=16", f"search.xi={xi}", "search.arch.lr=0.01")
    torch.manual_seed(0)
    net = SearchNetwork(**cfg.search.network)
    task = RotationTask(net.out_channels(), (3, 32, 32))
    task.build(net, DataFacts.of(tiny_data))
    start = {k: v.detach().clone() for k, v in net.cell_weights().items()}
    result = run_search(net, task, tiny_data, cfg, tmp_path, CPU, seed=0, progress=False)
    log = read_log(tmp_path / "alpha.jsonl")
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    if xi == 0:
        assert log[-1]["loss"] < 0.8 * log[1]["loss"], [r.get("loss") for r in log]
        assert log[-1]["alpha_loss"] < log[1]["alpha_loss"]
    assert all(r["alpha_loss"] is not None for r in log[1:])  # smoke profile: no warm-up
    moved = max((net.cell_weights()[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-4  # α was trained
    torch.testing.assert_close(torch.tensor(log[-1]["softmax"]["normal"]),
                               net.cell_weights()["normal"].detach())
    assert (tmp_path / "alpha.png").stat().st_size > 10_000
    genotype = load_genotype(result.genotype_path)
    assert genotype == net.genotype() and result.steps == 3 * steps
    assert result.seconds > 0 and 0 <= result.pretext_metric <= 100


def test_warm_up_epochs_leave_alpha_alone(make_cfg, tiny_data, tmp_path):
    cfg = _search_cfg(make_cfg, "search.epochs=1", "search.warmup_epochs=1")
    torch.manual_seed(0)
    net = SearchNetwork(**cfg.search.network)
    task = RotationTask(net.out_channels(), (3, 32, 32))
    task.build(net, DataFacts.of(tiny_data))
    before = [a.detach().clone() for a in net.arch_parameters()]
    run_search(net, task, tiny_data, cfg, tmp_path, CPU, seed=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, net.arch_parameters()))
    assert read_log(tmp_path / "alpha.jsonl")[-1]["alpha_loss"] is None


# ---- the searched backbone in the normal pipeline ------------------------------------------

def test_searched_backbone_runs_through_the_pipeline(make_cfg, tmp_path):
    path = save_genotype(GENOTYPE, tmp_path / "g")
    cfg = make_cfg("profile=smoke", "data=synthetic", "backbone=searched", f"backbone.genotype={path}",
                   "backbone.channels=[4,6,8]", "backbone.cells=[0,1,1]")
    rows = run(cfg, tmp_path / "run")
    table = pd.read_csv(cfg.leaderboard.path)
    assert len(table) == len(rows) == 2 * (1 + 7)  # conv3_linear + 3 linear probes + 2 + 2 k-NN, K=5,20
    assert set(table.backbone) == {"searched[channels=4-6-8]"} and table.test_acc.between(0, 100).all()
    assert table.pretrain_id[0].startswith("rotation_synthetic_searched_s0_")
    # the same settings again: every row is already there, nothing is recomputed
    assert len(run(cfg, tmp_path / "run2")) == len(rows)
    assert not (tmp_path / "run2" / "results.json").exists()
    # its export carries the genotype: the weights load without the search's own file
    folder = Path(cfg.paths.runs_dir) / "pretrain" / rows[0]["pretrain_id"]
    path.unlink()
    loaded = load_backbone(folder)
    assert type(loaded).__name__ == "SearchedBackbone" and (folder / path.name).is_file()


def test_searched_backbone_is_a_drop_in_for_frozen_stages_and_layerwise():
    net = SearchedBackbone(GENOTYPE, [4, 6, 8], [0, 1, 1])
    before = [p.detach().clone() for p in net.conv2.parameters()]
    reset_parameters(net.conv2)  # the evaluator's re-initialisation reaches every weight
    assert all(not torch.equal(b, p) for b, p in zip(before, net.conv2.parameters()) if b.ndim > 1)
    frozen = frozen_stages(net, "conv2")
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    task = LayerwiseTask(net.out_channels(), (3, 32, 32))
    task.build(net, DataFacts((3, 32, 32), torch.zeros(3), torch.ones(3)))  # reads specs: channels, pooling
    x = torch.randn(2, 3, 32, 32)
    for phase in task.phases(net):
        task.set_phase(phase)
        recon, target = task(net, x)
        assert recon.shape == target.shape


def test_builder_matches_a_parameter_budget(tmp_path):
    path = save_genotype(GENOTYPE, tmp_path)
    net = searched_backbone(str(path), channels=[16, 32, 64], param_budget=30_000)
    assert abs(count_parameters(net) / 30_000 - 1) < 0.1
    cfg_net = instantiate({"_target_": "ssl_bench.search.model.searched_backbone",
                           "genotype": str(path), "name": "darts_x", "channels": [4, 4, 4]})
    assert cfg_net.name == "darts_x" and cfg_net.genotype == GENOTYPE


@pytest.mark.slow  # a search, then two benchmark runs
def test_search_job_searches_then_compares_with_the_hand_designed_backbone(make_cfg, tmp_path):
    from ssl_bench.search.cli import search_job

    # a slimmer hand-designed backbone (about 10k parameters) keeps both networks quick
    cfg = _search_cfg(make_cfg, "derived.evaluate=true", "derived.backbone.cells=[0,0,1]",
                      "backbone.conv2.channels=[16]", "backbone.conv3.channels=[32]",
                      "eval.probes.enabled=false", "search.steps_per_epoch=2")
    meta = search_job(cfg, tmp_path / "job")
    assert meta["search_reused"] is False and meta["git_sha"] and meta["finished_at"]
    params = meta["parameters"]
    assert abs(params["searched"] / params["reference"] - 1) < 0.2
    table = pd.read_csv(cfg.leaderboard.path)
    # the hand-designed backbone slimmed by overrides is labelled with them, apart from `small`
    assert set(table.backbone) == {"small[conv2=16/3/max,conv3=32/3]",
                                  "searched[cells=0-0-1,param_budget=10240]"}
    assert len(table) == 4
    assert params["reference"] == 10_240
    summary = json.loads((tmp_path / "job" / "comparison.json").read_text())
    assert summary["parameters"] == params and len(summary["rows"]["searched"]) == 2
    text = (Path(cfg.paths.runs_dir) / "search_comparison_rotation.md").read_text()
    assert "| 5 |" in text and "| 20 |" in text and "searched" in text
    folder = Path(meta["search_dir"])
    assert {"alpha.jsonl", "alpha.png", "search.json", "config.yaml"} <= {p.name for p in folder.iterdir()}
    again = search_job(cfg, tmp_path / "job2")  # everything reused: search, pretraining, rows
    assert again["search_reused"] is True and again["genotype_path"] == meta["genotype_path"]
    assert len(pd.read_csv(cfg.leaderboard.path)) == 4


def test_search_configs_compose(make_cfg):
    cfg = _search_cfg(make_cfg, "search=gpu")
    assert cfg.search.xi > 0 and cfg.search.network.cells == [2, 2, 2] and cfg.backbone.name == "small"
    assert cfg.derived.backbone.name == "searched" and cfg.derived.evaluate is False
    from hydra import compose, initialize_config_dir

    from ssl_bench.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        bench = compose("search_benchmark", return_hydra_config=True)
    assert bench.derived.evaluate is True and bench.hydra.sweeper.params.task == "rotation"


def test_search_rejects_tasks_without_a_single_phase_pretext_loss(make_cfg):
    from ssl_bench.search.search import searched

    for task in ("random", "layerwise"):
        cfg = _search_cfg(make_cfg, f"task={task}")
        with pytest.raises(UserError, match=f"task={task}"):
            searched(cfg, CPU)


# ---- the CLI ------------------------------------------------------------------------------

def _cli(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, "profile=smoke", "progress=false", "data=synthetic",
         f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def test_cli_missing_genotype_file_is_a_clear_error(tmp_path):
    res = _cli(tmp_path, "ssl_bench", "backbone=searched", f"backbone.genotype={tmp_path / 'nope.json'}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "no file" in res.stderr and "nope.json" in res.stderr and "ssl-bench-search" in res.stderr


def test_search_cli_bad_task_is_a_clear_error(tmp_path):
    res = _cli(tmp_path, "ssl_bench.search.cli", "search=smoke", "task=supervised")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "no pretext loss" in res.stderr


def test_every_candidate_keeps_channels_and_agrees_on_stride_2_sizes():
    x = torch.randn(2, 6, 11, 11)
    for name in PRIMITIVES:
        assert make_op(name, 6, 1)(x).shape == x.shape
        assert make_op(name, 6, 2)(x).shape == (2, 6, 6, 6)
    with pytest.raises(ValueError, match="unknown operation"):
        make_op("conv_7x7", 6, 1)


def test_bad_search_network_settings_are_user_errors(make_cfg):
    from ssl_bench.search.search import searched

    cfg = _search_cfg(make_cfg, "search.network.cells=[1,1,0]")
    with pytest.raises(UserError, match="search.network"):
        searched(cfg, CPU)
    with open_dict(cfg):
        cfg.search.network.cells = [0, 0, 1]
        cfg.search.xi = 0.1
        cfg.precision = "bf16"
    with pytest.raises(UserError, match="bfloat16"):
        searched(cfg, CPU)


@pytest.mark.real_data
def test_search_on_real_cifar10_writes_a_genotype_the_pipeline_uses(make_cfg, tmp_path):
    from ssl_bench.search.cli import search_job
    from tests.conftest import real_cifar10_root

    root, cache = real_cifar10_root(), PROJECT_ROOT / ".cache" / "ssl_bench"
    cfg = _search_cfg(make_cfg, "data=cifar10", f"data.root={root}", f"paths.cache_dir={cache}",
                      "search.epochs=3", "search.steps_per_epoch=5", "search.batch_size=16")
    meta = search_job(cfg, tmp_path / "job")
    log = read_log(Path(meta["search_dir"]) / "alpha.jsonl")
    assert log[-1]["loss"] < log[1]["loss"]  # rotation on real photographs is learnable
    run_cfg = make_cfg("profile=smoke", "data=cifar10", f"data.root={root}", f"paths.cache_dir={cache}",
                       "backbone=searched", f"backbone.genotype={meta['genotype_path']}",
                       "eval.probes.enabled=false")
    rows = run(run_cfg, tmp_path / "run")
    assert len(rows) == 2 and all(r["backbone"] == "searched" for r in rows)
