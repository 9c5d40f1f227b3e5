"""DetrTrainLoop, DETR's training step: bfloat16 / float16 autocast on CPU, the GradScaler (clipping
after unscale, skipped non-finite steps, its state through --resume) and exact gradient
accumulation. Every model is the tiny DETR (tests/tiny.py) on same-size 64x64 images, so that
padding never differs between batchings; it has no dropout and FrozenBN (no batch statistics)."""

import copy
import math

import warnings

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from detr_d2.engine import DetrTrainLoop
from detr_d2.solver import build_optimizer


def _inputs(n, seed, empty=(), hw=(64, 64), num_classes=5):
    """``n`` random (3, H, W) uint8 images with 1-4 random boxes each (none for ``empty``)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for i in range(n):
        k = 0 if i in empty else int(torch.randint(1, 5, (1,), generator=g))
        corners = torch.rand(k, 2, 2, generator=g) * torch.tensor([w - 8.0, h - 8.0])
        inst = Instances(hw)
        inst.gt_boxes = Boxes(torch.cat([corners.min(1).values, corners.max(1).values + 8], 1))
        inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        out.append({"image": image, "height": h, "width": w, "instances": inst})
    return out


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).train()


def _step(model, cfg, batches, **loop_args):
    """One DetrTrainLoop.run_step over ``batches`` (the micro-batches of one optimizer step)."""
    loop = DetrTrainLoop(model, batches, build_optimizer(cfg, model), **loop_args)
    with EventStorage(0) as storage:
        loop.run_step()
    return loop, storage


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _passing_step(loop, storage, max_steps=20):
    """run_step until the GradScaler lets a step through: at the initial scale 2^16 the first
    float16 backward passes overflow (as on a GPU) and the scale backs off. Returns the skips."""
    for _ in range(max_steps):
        skipped = loop.skipped_steps
        loop.run_step()
        if loop.skipped_steps == skipped:
            return skipped
        loop.iter = storage.iter = loop.iter + 1
    raise AssertionError(f"{max_steps} float16 steps skipped")


def test_bfloat16_step_losses_within_1e_2_of_float32_and_gradients_finite(tiny_detr_cfg):
    """After 5 float32 steps on the batch (at initialization every query predicts nearly the
    same, so bfloat16 rounding can flip near-tied matching costs: measured, another query
    matched and loss_ce 2.6% off), every loss term in bfloat16 is within 1e-2 of float32
    (measured: 0.4%)."""
    cfg = tiny_detr_cfg
    cfg.SOLVER.BASE_LR = 1e-3
    model = _model(cfg)
    batch = _inputs(2, 0, empty=(1,))
    optimizer = build_optimizer(cfg, model)
    for _ in range(5):
        optimizer.zero_grad()
        sum(model(batch).values()).backward()
        optimizer.step()
    fp32 = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(batch)
    assert set(bf16) == set(fp32) and len(fp32) == 6  # 3 terms x (final + 1 auxiliary layer)
    for k in fp32:
        assert bf16[k].dtype == torch.float32, k  # the losses are computed in float32
        assert bf16[k].item() == pytest.approx(fp32[k].item(), rel=1e-2), k
    # one training step of the loop in bfloat16: every gradient finite, the weights change
    before = copy.deepcopy(model.state_dict())
    loop, storage = _step(model, tiny_detr_cfg, [batch], amp_dtype=torch.bfloat16)
    grads = _grads(model)
    assert len(grads) == len([p for p in model.parameters() if p.requires_grad])
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert not torch.equal(before["class_embed.weight"], model.state_dict()["class_embed.weight"])
    assert math.isfinite(storage.latest()["total_loss"][0])


def test_grad_scaler_at_2_16_clips_the_true_gradients(tiny_detr_cfg):
    """Clipping (DETR's 0.1 over the whole model) happens after unscaling: with the loss scaled by
    2^16 (float32 forward, so only the scaling differs) the clipped gradients are the float32
    ones. Clipping scaled gradients would leave them 2^16 times too small."""
    cfg = tiny_detr_cfg
    cfg.SOLVER.BASE_LR = 0.0  # the gradients stay in .grad; the weights stay put
    batch = _inputs(2, 1)
    model = _model(cfg)
    _step(model, cfg, [batch], clip_max_norm=0.1)
    reference = _grads(model)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in reference.values()]))
    assert norm.item() == pytest.approx(0.1, rel=1e-4)  # the raw norm is larger: clipping acted
    scaled = _model(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    loop, _ = _step(scaled, cfg, [batch], clip_max_norm=0.1, grad_scaler=scaler)
    assert loop.skipped_steps == 0
    for k, g in _grads(scaled).items():
        torch.testing.assert_close(g, reference[k], rtol=1e-5, atol=1e-9, msg=k)


def test_float16_step_clips_unscaled_gradients(tiny_detr_cfg):
    """The same through float16 autocast: the clipped norm is 0.1 and the gradients point where
    the float32 ones do (cosine > 0.99), within float16's precision."""
    cfg = tiny_detr_cfg
    cfg.SOLVER.BASE_LR = 0.0
    batch = _inputs(2, 1)
    model = _model(cfg)
    _step(model, cfg, [batch], clip_max_norm=0.1)
    reference = torch.cat([g.flatten() for g in _grads(model).values()])
    half = _model(cfg)
    optimizer = build_optimizer(cfg, half)
    loop = DetrTrainLoop(half, [batch] * 20, optimizer, clip_max_norm=0.1, amp_dtype=torch.float16)
    with EventStorage(0) as storage:
        skipped = _passing_step(loop, storage)
    assert loop.grad_scaler.get_scale() == 2.0 ** (16 - skipped)
    grads = torch.cat([g.flatten() for g in _grads(half).values()])
    assert grads.norm().item() == pytest.approx(0.1, rel=1e-3)
    assert torch.nn.functional.cosine_similarity(grads, reference, dim=0).item() > 0.99


def test_float16_overflow_step_is_skipped_and_counted_then_an_error(tiny_detr_cfg):
    """A step whose float16 forward overflows (a weight blown up: inf / NaN predictions, a
    non-finite loss) is skipped: weights and optimizer state unchanged, the scale halved, the skip
    counted in the event storage; MAX_CONSECUTIVE_SKIPS in a row stop training, naming the
    iteration."""
    cfg = tiny_detr_cfg
    model = _model(cfg)
    batches = [_inputs(2, s) for s in range(24)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7)  # where the first step passes
    optimizer = build_optimizer(cfg, model)
    loop = DetrTrainLoop(model, batches, optimizer, amp_dtype=torch.float16, grad_scaler=scaler)
    with EventStorage(0) as storage:
        skipped = _passing_step(loop, storage)  # the first step taken: AdamW has state
        loop.max_consecutive_skips = 2
        with torch.no_grad():
            model.input_proj.weight.mul_(1e6)  # float16 overflows (> 65504) in the projection
        weights = copy.deepcopy(model.state_dict())
        optimizer_state = copy.deepcopy(loop.optimizer.state_dict())
        scale = loop.grad_scaler.get_scale()
        assert optimizer_state["state"]  # AdamW's moments and step counts
        loop.iter = storage.iter = 30
        loop.run_step()
        assert loop.skipped_steps == skipped + 1
        assert loop.grad_scaler.get_scale() == scale / 2
        for k, v in model.state_dict().items():
            assert torch.equal(v, weights[k]), k
        after = loop.optimizer.state_dict()
        for i, s in optimizer_state["state"].items():
            for k, v in s.items():
                assert torch.equal(after["state"][i][k], v), (i, k)
        assert storage.latest()["amp_skipped_steps"][0] == skipped + 1
        assert len(storage.history("total_loss").values()) == 1  # the skipped step logs none
        loop.iter = storage.iter = 31
        with pytest.raises(FloatingPointError, match="2 optimizer steps in a row .* iteration 31"):
            loop.run_step()


def test_accumulating_4_micro_batches_of_2_gives_the_gradient_of_one_batch_of_8(tiny_detr_cfg):
    """float64 (model and losses): SOLVER.ACCUM_ITERS 4 of 2 images and one batch of the same 8
    images (same size: identical padding; one without boxes) give the same clipped gradient
    (atol 1e-6; measured max difference: ~1e-16). Every loss is normalized by the boxes (and
    class weights) of all 8, and clipping acts once, on the sum."""
    cfg = tiny_detr_cfg
    cfg.SOLVER.BASE_LR = 0.0
    images = _inputs(8, 2, empty=(5,))
    one = _model(cfg).double()
    _step(one, cfg, [images], clip_max_norm=0.1)
    micro = _model(cfg).double()
    batches = [images[i : i + 2] for i in range(0, 8, 2)]
    loop, _ = _step(micro, cfg, batches, clip_max_norm=0.1, accum_iters=4)
    with pytest.raises(StopIteration):  # the one optimizer step consumed all 4 micro-batches
        next(loop._data_loader_iter)
    reference = _grads(one)
    diff = max((g - reference[k]).abs().max().item() for k, g in _grads(micro).items())
    print(f"max |gradient difference| accumulation 4x2 vs batch 8, float64: {diff:.3g}")
    assert diff < 1e-6


def test_epochs_count_optimizer_steps_of_the_effective_batch(tiny_detr_cfg):
    from detr_d2.solver import epochs_to_iters

    cfg = tiny_detr_cfg
    cfg.SOLVER.EPOCHS, cfg.SOLVER.LR_DROP_EPOCHS = 10, (8,)
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.ACCUM_ITERS = 2, 2
    assert epochs_to_iters(cfg, 12) == (30, (24,))  # 3 steps of 4 images per epoch


def test_invalid_amp_and_accumulation_keys_name_the_key(tiny_detr_cfg):
    from detr_d2.engine import train_loop_args

    cfg = tiny_detr_cfg
    cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE = True, "fp8"
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        train_loop_args(cfg)
    cfg.SOLVER.AMP.DTYPE, cfg.SOLVER.ACCUM_ITERS = "float16", 0
    with pytest.raises(ValueError, match="SOLVER.ACCUM_ITERS"):
        train_loop_args(cfg)
    cfg.SOLVER.ACCUM_ITERS = 4
    assert train_loop_args(cfg) == {
        "amp_dtype": torch.float16, "accum_iters": 4, "clip_max_norm": 0.1, "clip_norm_type": 2.0,
        "max_consecutive_skips": 20,
    }  # fmt: skip


@pytest.mark.usefixtures("datasets_root")
def test_float16_train_net_logs_skips_and_resume_restores_the_grad_scaler(tmp_path):
    """train_net's Trainer in float16: the skipped steps reach metrics.json, the GradScaler's
    state is in the checkpoint and --resume restores it (not a fresh scale of 2^16)."""
    import json

    import train_net
    from detectron2.engine import default_argument_parser
    from tiny import TINY_TRAIN_OPTS

    def trainer(max_iter, resume):
        argv = ["--config-file", "configs/Base-DETR.yaml", *TINY_TRAIN_OPTS, "OUTPUT_DIR"]
        argv += [str(tmp_path), "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(max_iter)]
        argv += ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16"]
        t = train_net.Trainer(train_net.setup(default_argument_parser().parse_args(argv)))
        t.resume_or_load(resume=resume)
        return t

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = trainer(2, resume=False)
    # Detectron2's AMPTrainer, replaced by DetrTrainLoop, must not warn about CUDA on a CPU run
    assert not [w for w in caught if "GradScaler is enabled, but CUDA" in str(w.message)]
    first.train()
    saved = first._trainer.grad_scaler.state_dict()
    assert saved["scale"] < 2.0**16  # the first float16 steps overflowed and were skipped
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert metrics[-1]["amp_skipped_steps"] == first._trainer.skipped_steps > 0
    resumed = trainer(4, resume=True)
    assert resumed.start_iter == 2
    assert resumed._trainer.grad_scaler.state_dict() == saved
    assert trainer(4, resume=False)._trainer.grad_scaler.get_scale() == 2.0**16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_detr_panoptic_trains_under_autocast(tiny_detr_cfg, dtype):
    """DetrPanoptic (mask head) through the loop: float32 losses, finite gradients (float16: once
    the scale has backed off), the mask head's weights updated."""
    cfg = tiny_detr_cfg
    cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.MASK_ON = "DetrPanoptic", True
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.DETR.BACKBONE_FEATURE, cfg.MODEL.DETR.MASK_HEAD_GROUPS = "res4", 2
    batch = _inputs(2, 3)
    for x in batch:  # a mask per box: its rectangle
        inst = x["instances"]
        masks = torch.zeros((len(inst), 64, 64), dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, inst.gt_boxes.tensor.int().tolist()):
            m[y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
    model = _model(cfg)
    with torch.autocast("cpu", dtype=dtype):
        losses = model(batch)
    assert {"loss_mask", "loss_dice"} <= set(losses)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    before = model.mask_head.out_lay.weight.detach().clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7)  # 2^16 overflows 9 times first
    scaler = scaler if dtype == torch.float16 else None  # bfloat16: no scaling
    optimizer = build_optimizer(cfg, model)
    loop = DetrTrainLoop(model, [batch] * 20, optimizer, amp_dtype=dtype, grad_scaler=scaler)
    with EventStorage(0) as storage:
        _passing_step(loop, storage)
    assert all(torch.isfinite(g).all() for g in _grads(model).values())
    assert not torch.equal(before, model.mask_head.out_lay.weight)
