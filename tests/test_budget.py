"""One labelled-sample budget for every method, and the statistics and plumbing around it.

Covers: the shared budget and augmentation of the frozen evaluator and the supervised
baseline, the feature cache's equivalence with the flip-only recompute path, the convergence
check and paired differences (numbers and report), precision resolution, the pretext-only
conv4 stage, BatchNorm re-estimation and pretraining shared across evaluation seeds.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy.stats import t as student_t

import ssl_bench.evaluate as evaluate_module
from ssl_bench.backbone import ConvBackbone
from ssl_bench.data.augment import to_float
from ssl_bench.device import cpu_flags, machine_name, resolve_precision
from ssl_bench.distributed import Context
from ssl_bench.errors import UserError
from ssl_bench.evaluate import budget_steps, evaluate, evaluate_scratch, recalibrate_batchnorm
from ssl_bench.leaderboard import read
from ssl_bench.report import render_markdown
from ssl_bench.run import build_backbone, pretrain_dir, run
from ssl_bench.stats import convergence, convergence_status, paired_differences, summarize

CPU = torch.device("cpu")
SETTING = ("synthetic", "synthetic", "small")
# run() through the real config, as small as it gets: few images, one K, no probes
TINY_RUN = ("profile=smoke", "data=synthetic", "data.num_train=500", "data.num_test=200",
            "train.pretext_eval_images=100", "eval.labels_per_class=[5]", "eval.min_steps=4",
            "eval.max_steps=4", "eval.batch_size=32", "eval.probes.enabled=false")
CONV4 = "backbone.conv4={channels:[16],kernels:[3],pool:null}"


def _spy_augment(monkeypatch) -> list[dict]:
    """Replace `ssl_bench.evaluate.augment` by a recorder that calls the real one."""
    calls: list[dict] = []
    real = evaluate_module.augment

    def spy(x, crop_padding, flip, generator):
        out = real(x, crop_padding, flip, generator)
        calls.append({"crop_padding": crop_padding, "flip": flip, "input": x.clone(),
                      "output": out.clone()})
        return out

    monkeypatch.setattr(evaluate_module, "augment", spy)
    return calls


# ----------------------------------------------------------------------------- 1. one budget


def test_frozen_and_scratch_share_budget_and_augmented_batches(make_cfg, tiny_data, monkeypatch):
    """The ranking compares methods fairly only if the frozen evaluator and the supervised
    baseline see the same labelled batches, augmented identically, for the same number of steps."""
    cfg = make_cfg("profile=smoke", "eval.labels_per_class=[5]", "eval.min_steps=4",
                   "eval.max_steps=4", "eval.batch_size=16")
    calls = _spy_augment(monkeypatch)
    frozen_rows = evaluate(build_backbone(cfg.backbone, 0), tiny_data, cfg.eval, seed=3,
                           device=CPU, progress=False)
    frozen_calls, calls[:] = list(calls), []
    scratch_rows = evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), tiny_data, cfg.eval,
                                    seed=3, device=CPU, progress=False)
    scratch_calls = list(calls)

    assert len(frozen_calls) == len(scratch_calls) == 4  # one augment call per step
    for a, b in zip(frozen_calls, scratch_calls):
        assert (a["crop_padding"], a["flip"]) == (b["crop_padding"], b["flip"]) == (4, True)
        assert a["output"].shape[0] == b["output"].shape[0] == 16
        assert torch.equal(a["input"], b["input"])  # same labelled images in the same order
        assert torch.equal(a["output"], b["output"])  # same crop and flip draws
    # the augmentation really did something (crop offsets / flips), so equality is not trivial
    assert any(not torch.equal(c["input"], c["output"]) for c in frozen_calls)
    # and the steps are not all the same batch
    assert not torch.equal(frozen_calls[0]["input"], frozen_calls[1]["input"])

    (f,), (s,) = frozen_rows, scratch_rows
    for key in ("eval_steps", "eval_samples", "eval_augment", "eval_budget_scale"):
        assert f[key] == s[key], key
    assert (f["eval_steps"], f["eval_samples"], f["eval_augment"]) == (4, 64, "crop4+flip")
    assert f["eval_budget_scale"] == 1.0


def test_budget_scale_doubles_the_steps(make_cfg, tiny_data, monkeypatch):
    """The convergence check reruns a cell with `eval.budget_scale=2`: twice the steps, really run."""
    cfg = make_cfg("profile=smoke", "eval.labels_per_class=[5]", "eval.min_steps=4",
                   "eval.max_steps=4", "eval.batch_size=16", "eval.budget_scale=2")
    calls = _spy_augment(monkeypatch)
    (row,) = evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), tiny_data, cfg.eval,
                              seed=0, device=CPU, progress=False)
    assert row["eval_steps"] == 8 and len(calls) == 8
    assert row["eval_samples"] == 8 * 16 and row["eval_budget_scale"] == 2.0


@pytest.mark.parametrize("profile, ks", [("cpu", [20, 400]), ("quick", [20, 100]), ("smoke", [5, 20])])
def test_convergence_check_runs_the_profiles_smallest_and_largest_k(make_cfg, profile, ks):
    cfg = make_cfg("experiment=converge", f"profile={profile}")
    assert list(cfg.eval.labels_per_class) == ks
    assert min(ks) == min(make_cfg(f"profile={profile}").eval.labels_per_class)
    assert max(ks) == max(make_cfg(f"profile={profile}").eval.labels_per_class)
    assert cfg.eval.budget_scale == 2 and not cfg.eval.probes.enabled


def test_cpu_profile_budget_is_the_one_the_reference_run_measured(make_cfg):
    """The cpu profile's evaluator budget on CIFAR-10 (10 classes): 1,000 / 1,000 / 4,000 steps
    at K = 20 / 100 / 400 (128 passes, floor 1,000), and twice that in the convergence check.
    runs/reference/ was measured at exactly these budgets; changing the profile needs a new run."""
    cfg = make_cfg("profile=cpu")
    steps = {k: budget_steps(cfg.eval, 10 * k) for k in cfg.eval.labels_per_class}
    assert steps == {20: 1000, 100: 1000, 400: 4000}
    check = make_cfg("experiment=converge", "profile=cpu")
    assert {k: budget_steps(check.eval, 10 * k) for k in check.eval.labels_per_class} == {20: 2000, 400: 8000}


def test_eval_samples_counts_images_actually_seen(make_cfg, tiny_data, monkeypatch):
    """K=2 x 10 classes = 20 images < batch 32: every step sees the 20 images, so the row's
    sample count is steps x 20, not steps x the batch size."""
    cfg = make_cfg("profile=smoke", "eval.labels_per_class=[2]", "eval.min_steps=3",
                   "eval.max_steps=3", "eval.batch_size=32")
    calls = _spy_augment(monkeypatch)
    (row,) = evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), tiny_data, cfg.eval,
                              seed=0, device=CPU, progress=False)
    seen = sum(c["output"].shape[0] for c in calls)
    assert seen == 3 * 20
    assert row["eval_samples"] == seen


# ----------------------------------------------------------------------------- 2. feature cache


def _classifier_inputs(make_cfg, tiny_data, monkeypatch, *overrides):
    """The classifier inputs `evaluate` would train on, per K, for fixed indices and draws."""
    cfg = make_cfg("profile=smoke", "eval.labels_per_class=[5,10]", *overrides)
    seen: dict[int, list[torch.Tensor]] = {}

    def fake_train(model, batch_features, labels, steps, cfg_, seed, *args, **kwargs):
        gen = torch.Generator().manual_seed(123)
        idx = torch.arange(8)
        seen[len(labels)] = [batch_features(idx, gen).clone() for _ in range(2)]
        return 0.0

    monkeypatch.setattr(evaluate_module, "train_classifier", fake_train)
    rows = evaluate(build_backbone(cfg.backbone, 0), tiny_data, cfg.eval, seed=1, device=CPU,
                    progress=False)
    return seen, rows


def test_feature_cache_equals_flip_only_recompute(make_cfg, tiny_data, monkeypatch):
    """The cache is a speed-up, not a different protocol than crop_padding=0: same inputs to
    conv3 for the same indices and generator, at the largest K (the cache itself) and a smaller
    one (rows picked out of it)."""
    cached, cached_rows = _classifier_inputs(make_cfg, tiny_data, monkeypatch,
                                             "eval.feature_cache=true")
    fresh, fresh_rows = _classifier_inputs(make_cfg, tiny_data, monkeypatch,
                                           "eval.feature_cache=false", "eval.augment.crop_padding=0")
    assert sorted(cached) == sorted(fresh) == [50, 100]
    for n in cached:
        for a, b in zip(cached[n], fresh[n]):
            assert a.shape == b.shape == (8, 64, 8, 8)
            assert torch.allclose(a, b, atol=1e-5), n
        assert not torch.allclose(cached[n][0], cached[n][1])  # the flip draws vary per call
    assert [r["eval_augment"] for r in cached_rows] == ["flip", "flip"]
    assert [r["eval_augment"] for r in fresh_rows] == ["flip", "flip"]


# ----------------------------------------------------------------------------- 3. convergence


def _row(task, seed, acc, scale, k=20):
    return {"run_id": f"{task}-s{seed}-x{scale}", "task": task, "dataset": "synthetic",
            "pretrain_dataset": "synthetic", "backbone": "small", "protocol": "conv3_linear",
            "labels_per_class": k, "seed": seed, "test_acc": acc,
            "pretrain_id": "rot_p0" if task == "rotation" else None, "eval_budget_scale": scale}


def _convergence_table() -> pd.DataFrame:
    return pd.DataFrame([
        _row("rotation", 0, 50.0, 1), _row("rotation", 1, 52.0, 1),
        _row("rotation", 0, 50.2, 2), _row("rotation", 1, 52.8, 2),  # +0.5: converged
        _row("random", 0, 30.0, 1), _row("random", 1, 32.0, 1),
        _row("random", 0, 33.0, 2), _row("random", 1, 35.0, 2),  # +3: not converged
        _row("jigsaw", 0, 40.0, 1), _row("jigsaw", 1, 42.0, 1),
        _row("jigsaw", 0, 38.0, 2), _row("jigsaw", 1, 40.0, 2),  # -2: a drop fails too
        _row("supervised", 0, 40.0, 1), _row("supervised", 1, 44.0, 1),  # never checked
        _row("rotation", 2, 99.0, 2),  # a check row without its budget-1 row: unpaired, ignored
    ])


def test_convergence_pairs_budgets_and_marks_the_overview():
    """A cell whose mean moves by more than a point when the budget doubles is not converged;
    the report must say so per cell, and check rows must never enter the ranking."""
    table = _convergence_table()
    checks = convergence(table).set_index("task")
    assert sorted(checks.index) == ["jigsaw", "random", "rotation"]  # supervised: no check rows
    assert checks.loc["rotation", "mean_b"] == pytest.approx(51.0)
    assert checks.loc["rotation", "mean_2b"] == pytest.approx(51.5)
    assert checks.loc["rotation", "delta"] == pytest.approx(0.5)
    assert checks.loc["random", "delta"] == pytest.approx(3.0)
    assert checks.loc["jigsaw", "delta"] == pytest.approx(-2.0)
    assert checks.loc["jigsaw", "status"] == "fail"
    assert checks.loc["rotation", "n"] == checks.loc["random", "n"] == 2
    assert checks.loc["rotation", "scale"] == 2.0
    assert (checks.loc["rotation", "status"], checks.loc["random", "status"]) == ("pass", "fail")

    checks = convergence(table)
    status = {task: convergence_status(checks, SETTING, "conv3_linear", 20, task)
              for task in ("rotation", "random", "supervised")}
    assert status == {"rotation": "pass", "random": "fail", "supervised": "not run"}
    assert convergence_status(checks, SETTING, "conv3_linear", 100, "rotation") == "not run"

    md = render_markdown(table)
    overview = md.split("## Overview")[1].split("## Paired differences")[0]
    lines = {line.split("|")[1].strip(): line for line in overview.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert "**51.00 ± 1.41** ✓" in lines["rotation"]  # the scale-1 mean, best, converged
    assert "31.00 ± 1.41 ✗" in lines["random"]
    assert "42.00 ± 2.83 ?" in lines["supervised"]
    assert "41.00 ± 1.41 ✗" in lines["jigsaw"]

    stats = summarize(table).set_index("task")
    assert stats.loc["rotation", "mean"] == pytest.approx(51.0)  # not 51.25 (both budgets)
    assert stats.loc["random", "mean"] == pytest.approx(31.0)
    assert stats.loc["rotation", "n"] == 2


def test_a_check_pairs_with_the_budget_it_doubles_not_every_budget_of_its_cell():
    """A K rerun at a new budget leaves two budget-1 rows per (method, seed, K): each check
    row pairs with the one whose labelled samples it doubles, never with their average."""
    def row(seed, acc, scale, samples):
        return {**_row("random", seed, acc, scale, k=400), "run_id": f"random-s{seed}-{samples}-x{scale}",
                "eval_samples": samples * scale}
    table = pd.DataFrame([row(0, 56.0, 1, 256000), row(1, 58.0, 1, 256000),     # 64 passes
                          row(0, 58.0, 2, 256000), row(1, 60.0, 2, 256000),     # their check: +2
                          row(0, 58.5, 1, 512000), row(1, 60.5, 1, 512000),     # 128 passes
                          row(0, 59.0, 2, 512000), row(1, 60.8, 2, 512000)])    # their check: +0.4
    checks = convergence(table).set_index("base_samples")
    assert checks.loc[256000, "delta"] == pytest.approx(2.0) and checks.loc[256000, "status"] == "fail"
    assert checks.loc[512000, "mean_b"] == pytest.approx(59.5)
    assert checks.loc[512000, "delta"] == pytest.approx(0.4) and checks.loc[512000, "status"] == "pass"
    assert convergence_status(convergence(table), SETTING, "conv3_linear", 400, "random") == "fail"
    md = render_markdown(table)
    assert "| ×2 of 256,000 | 2 | 57.00 | 59.00 | +2.00 | ✗ |" in md
    assert "| ×2 of 512,000 | 2 | 59.50 | 59.90 | +0.40 | ✓ |" in md
    old = convergence(_convergence_table())  # rows without eval_samples pair as before
    assert set(old["base_samples"]) == {"-"} and "| ×2 | 2 |" in render_markdown(_convergence_table())


# ----------------------------------------------------------------------------- 4. paired


def test_paired_differences_by_seed(tmp_path):
    """Methods share each seed's labelled subsets, so the honest comparison is the per-seed
    difference with a t interval over seeds; unpaired seeds and check rows do not count."""
    rows = []
    for seed, (rot, rnd, jig) in enumerate([(50, 45, 44), (52, 46, 48), (55, 51, 50)]):
        rows += [_row("rotation", seed, rot, 1), _row("random", seed, rnd, 1),
                 _row("jigsaw", seed, jig, 1)]
    rows.append(_row("rotation", 3, 90.0, 1))  # no random row for seed 3: ignored
    rows.append(_row("rotation", 0, 99.0, 2))  # a convergence-check row: ignored
    path = tmp_path / "leaderboard.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read(path)

    diffs = paired_differences(table, "random", "conv3_linear").set_index("task")
    assert sorted(diffs.index) == ["jigsaw", "rotation"]
    rot = diffs.loc["rotation"]
    half = student_t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert half == pytest.approx(2.4841, abs=1e-4)
    assert rot["n"] == 3 and rot["baseline"] == "random"
    assert rot["mean_diff"] == pytest.approx(5.0)  # diffs 5, 6, 4
    assert rot["std_diff"] == pytest.approx(1.0)
    assert rot["ci95"] == pytest.approx(half)
    assert (rot["lo"], rot["hi"]) == (pytest.approx(5.0 - half), pytest.approx(5.0 + half))
    jig = diffs.loc["jigsaw"]  # diffs -1, 2, -1: the interval straddles 0
    assert jig["mean_diff"] == pytest.approx(0.0) and jig["std_diff"] == pytest.approx(math.sqrt(3))
    assert jig["lo"] < 0 < jig["hi"]
    assert paired_differences(table, "random", "knn_conv2").empty

    section = render_markdown(table).split("## Paired differences")[1].split("## Convergence")[0]
    assert "method − random" in section
    rot_line = next(line for line in section.splitlines() if line.startswith("| rotation"))
    jig_line = next(line for line in section.splitlines() if line.startswith("| jigsaw"))
    assert "+5.00 [+2.52, +7.48] *" in rot_line
    assert "+0.00 [-4.30, +4.30]" in jig_line and "*" not in jig_line


# ----------------------------------------------------------------------------- 5. precision


def test_resolve_precision_on_cpu():
    """bf16 only where the CPU computes it natively: elsewhere it is emulated and slower."""
    assert resolve_precision("auto", CPU, flags=set()) == "fp32"
    assert resolve_precision("auto", CPU, flags={"sse2", "avx2"}) == "fp32"
    assert resolve_precision("auto", CPU, flags={"avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", CPU, flags={"amx_bf16", "avx2"}) == "bf16"
    assert resolve_precision("fp32", CPU, flags={"amx_bf16"}) == "fp32"
    assert resolve_precision("bf16", CPU, flags=set()) == "bf16"
    with pytest.raises(UserError, match="precision"):
        resolve_precision("fp16", CPU, flags=set())


def test_a_bf16_pretraining_is_evaluated_in_fp32_where_asked(make_cfg, tmp_path):
    """`pretrain_precision=bf16 precision=fp32` finds the pretraining a bf16 run made (what a
    CPU without native bf16 does with weights pretrained where bf16 is native): no second
    pretraining, rows of their own, and both precisions in every row."""
    first = run(make_cfg(*TINY_RUN, "task=rotation", "train.seed=0", "precision=bf16"), tmp_path / "a")
    mixed = make_cfg(*TINY_RUN, "task=rotation", "train.seed=0", "precision=fp32", "pretrain_precision=bf16")
    second = run(mixed, tmp_path / "b")
    assert [r["pretrain_reused"] for r in second] == [True]
    assert second[0]["pretrain_id"] == first[0]["pretrain_id"]
    assert second[0]["run_id"] != first[0]["run_id"]
    assert (first[0]["precision"], first[0]["pretrain_precision"]) == ("bf16", "bf16")
    assert (second[0]["precision"], second[0]["pretrain_precision"]) == ("fp32", "bf16")
    scratch = run(make_cfg(*TINY_RUN, "task=random", "precision=fp32", "pretrain_precision=bf16"),
                  tmp_path / "c")
    assert scratch[0]["precision"] == "fp32" and pd.isna(scratch[0]["pretrain_precision"])


def test_cpu_flags_parses_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                       "flags\t\t: fpu vme avx2 avx512_bf16\nbogomips\t: 4000\n\n"
                       "processor\t: 1\nflags\t\t: fpu vme avx2 avx512_bf16\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "vme", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_machine_name_tells_vaguely_named_cpus_apart(tmp_path, monkeypatch):
    """"AMD EPYC" names Zen 3 and Zen 5 alike: the row's machine gives family, model, cores
    and whether bf16 is native, which the seconds and precision=auto depend on."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    zen3, zen5 = tmp_path / "zen3", tmp_path / "zen5"
    zen3.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: other\n")
    zen5.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "flags\t\t: fpu avx2 avx512_bf16\n")
    assert machine_name(CPU, str(zen3)) == "AMD EPYC, family 25 model 1, 2 CPUs, no native bf16"
    assert machine_name(CPU, str(zen5)) == "AMD EPYC, family 26 model 2, 2 CPUs, bf16 native"
    assert machine_name(CPU, str(tmp_path / "missing")).endswith("2 CPUs")  # no /proc: still a name


# ----------------------------------------------------------------------------- 6. conv4


def _conv4_backbone() -> ConvBackbone:
    torch.manual_seed(0)
    return ConvBackbone("t", {"channels": [8], "kernels": [3], "pool": "max"},
                        {"channels": [8], "kernels": [3], "pool": "max"},
                        {"channels": [12], "kernels": [3], "pool": None},
                        conv4={"channels": [16], "kernels": [3], "pool": None})


def test_pretext_stage_is_used_then_dropped():
    """conv4 feeds the pretext head only; what is evaluated is conv1-conv3."""
    net = _conv4_backbone().eval()  # BatchNorm on running statistics: outputs comparable
    x = torch.randn(2, 3, 32, 32)
    assert net.stages == ("conv1", "conv2", "conv3", "conv4")
    assert net(x).shape == (2, 16)
    assert net.out_channels() == 16 and net.out_channels("conv3") == 12
    conv3_out = net.features(x, "conv3")
    assert net.drop_pretext_stage() is net
    assert net.stages == ("conv1", "conv2", "conv3") and not hasattr(net, "conv4")
    assert net.out_channels() == 12
    assert net(x).shape == (2, 12)
    assert torch.allclose(net(x), conv3_out.mean((2, 3)), atol=1e-6)
    assert not any(k.startswith("conv4") for k in net.state_dict())
    net.drop_pretext_stage()  # idempotent
    assert net.stages == ("conv1", "conv2", "conv3")


def test_conv4_override_runs_pretext_and_scratch(make_cfg, tmp_path, monkeypatch):
    """The CLI override composes, pretraining uses conv4, and the supervised baseline drops it."""
    cfg = make_cfg(*TINY_RUN, "task=rotation", CONV4)
    assert cfg.backbone.conv4.channels == [16]
    rows = run(cfg, tmp_path / "rot")
    assert [(r["protocol"], r["labels_per_class"]) for r in rows] == [("conv3_linear", 5)]
    assert 0 <= rows[0]["test_acc"] <= 100 and rows[0]["pretrain_id"]

    models = []
    real_train = evaluate_module.train_classifier

    def spy_train(model, *args, **kwargs):
        models.append(model)
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_classifier", spy_train)
    cfg = make_cfg(*TINY_RUN, "task=supervised", CONV4)
    rows = run(cfg, tmp_path / "sup")
    assert [(r["protocol"], r["task"]) for r in rows] == [("conv3_linear", "supervised")]
    (model,) = models
    assert model[0].stages == ("conv1", "conv2", "conv3")
    assert not any("conv4" in k for k in model.state_dict())
    assert model[1].in_features == 128  # conv3 of the small backbone, not conv4's 16


# ----------------------------------------------------------------------------- 7. BatchNorm


def test_recalibrate_batchnorm_matches_batch_statistics(make_cfg, tiny_data):
    """Patch tasks learn conv1-conv2 statistics on tiles; re-estimation must replace them by
    the statistics of whole images, layer by layer, without touching any weight."""
    cfg = make_cfg("profile=smoke")
    net = build_backbone(cfg.backbone, 0)
    net.train()
    bn1, bn2 = net.conv1[1], net.conv2[1]
    bn1.running_mean.fill_(5.0)  # stale statistics that must go
    weights = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    conv3_state = {k: v.clone() for k, v in net.conv3.state_dict().items()}
    images = tiny_data.train.images[:24]
    mean, std = tiny_data.mean, tiny_data.std
    x = to_float(images, mean, std)
    with torch.no_grad():
        first = net.conv1[0](x)

    recalibrate_batchnorm(net, images, mean, std, CPU, max_images=24, chunk=24)

    assert torch.allclose(bn1.running_mean, first.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn1.running_var, first.var((0, 2, 3), unbiased=True), atol=1e-4)
    with torch.no_grad():  # conv2's BatchNorm saw conv1 already normalised by its new statistics
        second = net.conv2[0](net.conv1(x))
    assert torch.allclose(bn2.running_mean, second.mean((0, 2, 3)), atol=1e-5)
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k
    for k, v in conv3_state.items():  # conv3 is retrained anyway: not re-estimated
        assert torch.equal(net.conv3.state_dict()[k], v), k
    for m in (bn1, bn2):
        assert not m.training and m.momentum == 0.1


# ----------------------------------------------------------------------------- 8. shared pretraining


def test_evaluation_seeds_share_one_pretraining(make_cfg, tmp_path):
    """With train.seed fixed, each evaluation seed reuses one pretraining (the cpu profile's
    benchmark); with the default (train.seed follows seed) each seed pretrains its own."""
    cfg0 = make_cfg(*TINY_RUN, "task=rotation", "train.seed=0", "seed=0")
    first = run(cfg0, tmp_path / "a")
    cfg1 = make_cfg(*TINY_RUN, "task=rotation", "train.seed=0", "seed=1")
    second = run(cfg1, tmp_path / "b")
    folder = pretrain_dir(cfg0, Context())
    assert pretrain_dir(cfg1, Context()) == folder and folder.is_dir()
    assert [r["pretrain_reused"] for r in first] == [False]
    assert [r["pretrain_reused"] for r in second] == [True]
    assert second[0]["pretrain_id"] == first[0]["pretrain_id"] == folder.name
    assert second[0]["run_id"] != first[0]["run_id"]
    assert (second[0]["pretrain_seed"], second[0]["seed"]) == (0, 1)
    assert (first[0]["pretrain_seed"], first[0]["seed"]) == (0, 0)

    own = run(make_cfg(*TINY_RUN, "task=rotation", "seed=1"), tmp_path / "c")
    assert own[0]["pretrain_id"] != first[0]["pretrain_id"]
    assert [r["pretrain_reused"] for r in own] == [False]
    assert (own[0]["pretrain_seed"], own[0]["seed"]) == (1, 1)
