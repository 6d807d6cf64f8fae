"""The one training loop, the one checkpoint and the task lifecycle."""

import pytest
import torch
from torch import nn

from ssl_bench.checkpoint import BadCheckpoint, Checkpoint
from ssl_bench.errors import NonFiniteLossError, UserError
from ssl_bench.loop import Step, train_steps
from ssl_bench.methods import pretrained_methods
from ssl_bench.run import build_backbone, run
from ssl_bench.tasks import build_task
from ssl_bench.train import pretrain

CPU = torch.device("cpu")


def _linear_problem(lr=0.1):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x = torch.randn(8, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def forward(inputs, targets, scale):
        out = model(inputs)
        return nn.functional.mse_loss(out, targets) * scale, out

    return model, optimizer, forward, (lambda: (x, y, len(x)))


def test_steps_call_the_hooks_in_order_number_from_start_and_lower_the_loss():
    model, optimizer, forward, next_batch = _linear_problem()
    events = []

    def before(step: Step):
        assert step.loss is None and step.outputs is None and step.inputs.shape == (8, 3)
        events.append(("before", step.number))

    def after(step: Step):
        assert step.outputs.shape == (8, 1)
        events.append(("after", step.number, step.loss.item()))

    last = train_steps(forward, next_batch, optimizer, None, 30, device=CPU, precision="fp32",
                       start=10, before_step=before, after_step=after)
    assert [e[:2] for e in events] == [(k, n) for n in range(11, 41) for k in ("before", "after")]
    losses = [e[2] for e in events if e[0] == "after"]
    assert last.number == 40 and losses[-1] < 0.1 * losses[0]
    assert train_steps(forward, next_batch, optimizer, None, 0, device=CPU, precision="fp32") is None


def test_a_non_finite_loss_stops_with_the_callers_message_before_any_update():
    model, optimizer, forward, next_batch = _linear_problem()
    before = [p.detach().clone() for p in model.parameters()]

    def nan_forward(inputs, targets, scale):
        loss, out = forward(inputs, targets, scale)
        return loss * float("nan"), out

    with pytest.raises(NonFiniteLossError, match="became nan at step 4"):
        train_steps(nan_forward, next_batch, optimizer, None, 5, device=CPU, precision="fp32", start=3,
                    diverged=lambda value, n: f"loss became {value} at step {n}")
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_checkpoint_round_trip_restores_parts_counters_and_random_state(tmp_path):
    model, optimizer, forward, next_batch = _linear_problem()
    train_steps(forward, next_batch, optimizer, None, 3, device=CPU, precision="fp32")
    gen = torch.Generator().manual_seed(5)
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")
    checkpoint.save({"model": model, "optimizer": optimizer}, gen, epoch=2, step=6, seconds=1.5,
                    finished=False, phase="all")
    expected_draw = torch.rand(4, generator=gen)

    model2, optimizer2, _, _ = _linear_problem(lr=0.5)
    gen2 = torch.Generator().manual_seed(99)
    state = checkpoint.load(CPU, {"model": model2, "optimizer": optimizer2})
    checkpoint.restore(state, {"model": model2, "optimizer": optimizer2}, gen2)
    assert (state["epoch"], state["step"], state["seconds"], state["finished"], state["phase"]) == \
        (2, 6, 1.5, False, "all")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert optimizer2.param_groups[0]["lr"] == 0.1
    assert torch.equal(torch.rand(4, generator=gen2), expected_draw)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "torch-dict-without-counters"])
def test_an_unreadable_or_foreign_checkpoint_is_refused_in_one_line_and_kept(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "torch-dict-without-counters":
        torch.save({"model": {}}, path)
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    model = nn.Linear(3, 1)
    with pytest.raises(UserError, match="move it away") as info:
        Checkpoint(path).load(CPU, {"model": model})
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("saved", [nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 1))])
def test_a_checkpoint_of_another_model_is_refused_before_loading(tmp_path, saved):
    """Other shapes or other keys: found by `load`, before `restore` changes any weight."""
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")
    checkpoint.save({"model": saved}, torch.Generator(), epoch=1, step=1, seconds=0.0, finished=True)
    model = nn.Linear(3, 1)
    before = [t.clone() for t in model.state_dict().values()]
    with pytest.raises(BadCheckpoint, match="does not fit this run's model") as info:
        checkpoint.load(CPU, {"model": model})
    message = str(info.value)
    assert "\n" not in message and ("(2, 3) in the file" in message or "lacks the key" in message)
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))


@pytest.mark.parametrize("content", [b"\x80garbage", "torn", "other-model"])
def test_a_bad_cache_checkpoint_is_moved_aside_and_recomputed(tmp_path, caplog, content):
    """For a cache (pretraining, search), a bad file is kept under another name, the caller
    is told to start again (None), and the log says so; the file itself is never lost."""
    path = tmp_path / "checkpoint.pt"
    if content == "torn":
        Checkpoint(path).save({"model": nn.Linear(3, 1)}, torch.Generator(), epoch=1, step=1,
                              seconds=0.0, finished=False)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "other-model":
        Checkpoint(path).save({"model": nn.Linear(5, 1)}, torch.Generator(), epoch=1, step=1,
                              seconds=0.0, finished=False)
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with caplog.at_level("WARNING"):
        state = Checkpoint(path).load(CPU, {"model": nn.Linear(3, 1)}, recompute="starts from epoch 0")
    assert state is None and not path.exists()
    (aside,) = tmp_path.glob("checkpoint.pt.bad-*")
    assert aside.read_bytes() == before
    assert "moved it to" in caplog.text and "starts from epoch 0" in caplog.text


@pytest.mark.parametrize("method", [m for m in pretrained_methods()])
def test_a_built_task_has_its_whole_parameter_set_before_training(make_cfg, tiny_data, tmp_path, method):
    """build_task is the only construction step: phases and pretraining add no parameter,
    so save, resume and reuse see the same modules (layerwise's decoders included)."""
    cfg = make_cfg("profile=smoke", "data=synthetic", f"task={method}", "train.epochs=1",
                   "train.steps_per_epoch=1", "train.batch_size=16", "train.pretext_eval_images=32")
    backbone = build_backbone(cfg.backbone, 0)
    task = build_task(cfg.task.module, backbone, tiny_data, CPU)
    keys = set(task.state_dict())
    assert keys, method
    task.phases(backbone)
    assert set(task.state_dict()) == keys
    pretrain(backbone, task, tiny_data, cfg.train, tmp_path, CPU, 0, progress=False)
    assert set(task.state_dict()) == keys
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(saved["task"]) == keys and saved["finished"] is True


def test_an_unbuilt_task_is_a_programming_error_not_a_user_error(make_cfg, tiny_data, tmp_path):
    from ssl_bench.tasks.rotation import RotationTask

    cfg = make_cfg("profile=smoke", "data=synthetic")
    backbone = build_backbone(cfg.backbone, 0)
    with pytest.raises(RuntimeError, match="build_task"):
        pretrain(backbone, RotationTask(backbone.out_channels(), (3, 32, 32)), tiny_data, cfg.train,
                 tmp_path, CPU, 0, progress=False)


def test_a_finished_pretraining_with_a_bad_checkpoint_is_kept_aside_and_pretrained_again(
        make_cfg, tmp_path, caplog):
    """`pretrain.json` says finished, but the checkpoint is of an earlier epoch (a copied or
    restored folder): loading it would evaluate half-trained weights as the finished ones.
    The pretraining is a cache entry, so both files are moved aside (kept) and it runs again,
    to the same weights (CPU runs repeat exactly)."""
    common = ("profile=smoke", "data=synthetic", "data.num_train=500", "data.num_test=200",
              "train.batch_size=32", "train.steps_per_epoch=2", "train.epochs=2",
              "train.pretext_eval_images=100", "eval.min_steps=5", "eval.max_steps=5",
              "eval.probes.enabled=false", "eval.labels_per_class=[5]", "train.seed=0")
    run(make_cfg(*common, "seed=0"), tmp_path / "run0")
    (folder,) = (tmp_path / "runs" / "pretrain").iterdir()
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    trained = state["backbone"]
    state["epoch"] = 1
    torch.save(state, folder / "checkpoint.pt")
    before = (folder / "checkpoint.pt").read_bytes()
    with caplog.at_level("WARNING"):
        rows = run(make_cfg(*common, "seed=1"), tmp_path / "run1")
    assert rows and "is that of epoch 1, not that of the last epoch (2)" in caplog.text
    assert "pretrains again" in caplog.text
    (aside,) = folder.glob("checkpoint.pt.bad-*")
    assert aside.read_bytes() == before and list(folder.glob("pretrain.json.bad-*"))
    again = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert again["epoch"] == 2 and all(torch.equal(trained[k], again["backbone"][k]) for k in trained)
