import pytest
import torch

from flarecli.core.training import losses as L


def test_loss_composition_weights_the_right_kinds():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6, 6, 6)
    target = torch.randint(0, 4, (3, 6, 6, 6))
    kinds = ["FL", "CPL", "PL"]
    terms = L.kind_losses(logits, target, kinds)
    assert set(terms) == {"FL", "CPL", "PL"}
    for i, k in enumerate(kinds):
        assert terms[k] == pytest.approx(float(L.dice_ce(logits[i:i + 1], target[i:i + 1])))
    total = L.combine(terms, {"FL": 1.0, "CPL": 1.0, "PL": 0.5})
    assert float(total) == pytest.approx(float(terms["FL"] + terms["CPL"] + 0.5 * terms["PL"]))
    # a kind missing from the batch adds nothing
    only = L.kind_losses(logits[:2], target[:2], ["FL", "FL"])
    assert set(only) == {"FL"}
    assert float(L.combine(only, {"FL": 1.0, "CPL": 1.0, "PL": 0.5})) == pytest.approx(
        float(L.dice_ce(logits[:2], target[:2])))


def test_dice_loss_is_zero_for_a_perfect_confident_prediction():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6, 2:6] = 1
    logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 50
    assert float(L.soft_dice_loss(logits, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.soft_dice_loss(-logits, target)) == pytest.approx(1.0, abs=1e-4)


def test_ema_update_is_exact():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in teacher.parameters()]
    L.ema_update(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-7, rtol=0)


def test_real_time_pseudo_label_correction():
    teacher = torch.zeros(1, 2, 2, 2, 2)
    teacher[0, 1, 0] = 5.0  # the teacher sees tumor on slice 0
    annotated = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    annotated[0, 1, 1, 1] = 1  # an annotated tumor voxel the teacher missed
    pseudo = L.corrected_pseudo_label(teacher, annotated)
    assert pseudo[0, 0].eq(1).all() and pseudo[0, 1, 1, 1] == 1
    assert int(pseudo.sum()) == 5
    # several classes: an annotated voxel keeps its own class
    teacher3 = torch.zeros(1, 3, 2, 2, 2)
    teacher3[0, 1] = 5.0
    annotated = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    annotated[0, 0, 0, 0] = 2
    pseudo = L.corrected_pseudo_label(teacher3, annotated)
    assert pseudo[0, 0, 0, 0] == 2 and int((pseudo == 1).sum()) == 7
    # ties go to the first class, as torch.argmax breaks them
    ties = torch.randint(0, 2, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0)).float()
    unlabelled = torch.zeros(2, 4, 4, dtype=torch.long)
    assert torch.equal(L.corrected_pseudo_label(ties, unlabelled), ties.argmax(1))


def test_dice_loss_works_on_slices():
    logits = torch.full((2, 3, 4, 4), -10.0)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, :2] = 1
    target[:, 2:, :2] = 2
    logits.scatter_(1, target[:, None], 10.0)
    assert float(L.soft_dice_loss(logits, target)) < 1e-3
    assert float(L.dice_ce(logits, target)) < 1e-3


def test_deep_supervision_weights():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8, 8))
    full, half = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4)
    got = float(L.deep_supervised([full, half], target))
    t_half = target[:, 1::2, 1::2, 1::2]  # nearest-exact samples voxel centres
    expected = (float(L.dice_ce(full, target)) + 0.5 * float(L.dice_ce(half, t_half))) / 1.5
    assert got == pytest.approx(expected, rel=1e-5)


def test_balanced_weights_favour_small_classes_and_keep_the_scale():
    from flarecli.core.training.losses import balanced_weights, dice_ce

    target = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    target[0, :1] = 1  # 100 voxels of class 1, 900 of class 0, none of class 2
    w = balanced_weights(target, 3)
    assert w[2] == 0 and w[1] / w[0] == pytest.approx(3.0)  # sqrt(900 / 100)
    assert float((w[:2] * torch.tensor([900.0, 100.0])).sum()) == pytest.approx(1000.0)
    # a uniform prediction: the balanced loss pulls harder towards the small class
    logits = torch.zeros(1, 3, 10, 10, 10, requires_grad=True)
    dice_ce(logits, target, balanced=True).backward()
    balanced = logits.grad[0, 1, 0].mean()
    logits.grad = None
    dice_ce(logits, target).backward()
    assert balanced < logits.grad[0, 1, 0].mean() < 0


def test_dice_loss_equals_the_one_hot_definition():
    import torch.nn.functional as F

    def one_hot_dice(logits, target, smooth=1e-5):
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
        dims = (0, *range(2, logits.ndim))
        tp = (probs * onehot).sum(dims)
        fp = (probs * (1 - onehot)).sum(dims)
        fn = ((1 - probs) * onehot).sum(dims)
        return 1 - ((2 * tp + smooth) / (2 * tp + fp + fn + smooth))[1:].mean()

    torch.manual_seed(0)
    for shape in [(2, 14, 6, 7, 8), (3, 2, 9, 9), (1, 5, 4, 4, 4)]:
        logits = torch.randn(*shape, requires_grad=True)
        target = torch.randint(0, shape[1], (shape[0], *shape[2:]))
        ours, theirs = L.soft_dice_loss(logits, target), one_hot_dice(logits, target)
        assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-6)
        g1, = torch.autograd.grad(ours, logits)
        g2, = torch.autograd.grad(theirs, logits)
        assert torch.allclose(g1, g2, atol=1e-7)
