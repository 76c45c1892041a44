"""Loss options: the paper's terms by default, GIoU and log-L1 attribute losses, hard pixel mining and the
small-instance weight of the semantic loss, on real head outputs of known values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from casnet_core.labels import IGNORE_INDEX
from casnet_core.losses import attribute_regression_loss, casnet_losses, generalized_iou, semantic_loss


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "semantic": torch.randn(2, 19, 8, 8, generator=generator, requires_grad=True),
        "attributes": (torch.rand(2, 4, 8, 8, generator=generator) * 5 + 0.1).requires_grad_(),
        "box_logits": torch.randn(2, 8, 8, 8, generator=generator, requires_grad=True),
    }
    semantic = torch.randint(0, 19, (2, 8, 8), generator=generator)
    semantic[0, 0] = IGNORE_INDEX
    targets = {
        "semantic": semantic,
        "attributes": torch.rand(2, 4, 8, 8, generator=generator) * 5,
        "thing_mask": torch.rand(2, 8, 8, generator=generator) < 0.4,
        "box_prob": (torch.rand(2, 8, 8, 8, generator=generator) < 0.05).float(),
    }
    return outputs, targets


def test_defaults_are_the_papers_losses():
    outputs, targets = _batch()
    losses = casnet_losses(outputs, targets)
    thing = targets["thing_mask"].unsqueeze(1).expand(-1, 4, -1, -1)
    valid = (targets["semantic"] != IGNORE_INDEX).unsqueeze(1).expand(-1, 8, -1, -1)
    expected = {
        "semantic": F.cross_entropy(outputs["semantic"], targets["semantic"], ignore_index=IGNORE_INDEX),
        "attributes": F.l1_loss(outputs["attributes"][thing], targets["attributes"][thing]),
        "box_prob": F.binary_cross_entropy_with_logits(outputs["box_logits"][valid], targets["box_prob"][valid]),
    }
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5), key
    assert losses["loss"].item() == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-5)


def test_generalized_iou_of_known_boxes():
    # Around one point: (l, t, r, b). Identical: 1. A 2x2 box inside a 4x4 one: IoU 4/16, enclosing = union.
    same = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert generalized_iou(same, same).item() == pytest.approx(1.0, abs=1e-5)
    assert generalized_iou(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[2.0, 2, 2, 2]])).item() == \
        pytest.approx(0.25, abs=1e-5)
    # Two boxes touching at the point: IoU 0, and GIoU 0 as their enclosing box is their union. Two 2x2 boxes
    # shifted by 1 in y: intersection 2, union 6, enclosing box 6: GIoU = IoU = 1/3.
    left, right = torch.tensor([[2.0, 1, 0, 1]]), torch.tensor([[0.0, 1, 2, 1]])
    assert generalized_iou(left, right).item() == pytest.approx(0.0, abs=1e-5)
    assert generalized_iou(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[1.0, 0, 1, 2]])).item() == \
        pytest.approx(1 / 3, abs=1e-5)
    # The loss does not depend on the scale for the same shapes: small and large boxes weigh alike.
    small, large = torch.tensor([[1.0, 1, 2, 2]]), torch.tensor([[1.5, 1, 2, 2]])
    assert attribute_regression_loss(small, large, kind="giou").item() == pytest.approx(
        attribute_regression_loss(small * 50, large * 50, kind="giou").item(), rel=1e-4)
    assert attribute_regression_loss(small * 50, large * 50, kind="l1").item() == pytest.approx(
        50 * attribute_regression_loss(small, large, kind="l1").item(), rel=1e-4)


def test_log_l1_is_scale_free_and_floors_zero_distances():
    predicted, target = torch.tensor([[2.0, 4.0, 1.0, 1.0]]), torch.tensor([[1.0, 2.0, 1.0, 0.0]])
    value = attribute_regression_loss(predicted, target, kind="l1_log").item()
    expected = (2 * torch.log(torch.tensor(2.0)) + 0 + torch.log(torch.tensor(1.0 / 0.1))).item() / 4
    assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["giou", "l1_log"])
def test_attribute_options_train_the_attribute_head(kind):
    outputs, targets = _batch()
    losses = casnet_losses(outputs, targets, attribute_loss=kind)
    losses["loss"].backward()
    assert outputs["attributes"].grad.abs().sum() > 0
    # Only thing cells carry a gradient.
    assert (outputs["attributes"].grad.permute(0, 2, 3, 1)[~targets["thing_mask"]] == 0).all()


def test_hard_pixel_mining_is_the_mean_of_the_largest_pixel_losses():
    outputs, targets = _batch()
    pixel = F.cross_entropy(outputs["semantic"], targets["semantic"], ignore_index=IGNORE_INDEX, reduction="none")
    valid = targets["semantic"] != IGNORE_INDEX
    per_image = []
    for image in range(2):  # image 0 has a void pixel: 63 pixels, the 13 hardest; image 1: the 13 of 64
        losses = torch.sort(pixel[image][valid[image]], descending=True).values
        per_image.append(losses[: round(0.2 * losses.numel())].mean())
    assert semantic_loss(outputs["semantic"], targets, top_k=0.2).item() == pytest.approx(
        torch.stack(per_image).mean().item(), rel=1e-5)
    assert semantic_loss(outputs["semantic"], targets, top_k=1.0).item() == pytest.approx(
        pixel[valid].mean().item(), rel=1e-5)
    # Per image: a batch's loss is the mean of its images' losses, however it is split.
    halves = [semantic_loss(outputs["semantic"][i : i + 1], {"semantic": targets["semantic"][i : i + 1]}, top_k=0.2)
              for i in range(2)]
    assert semantic_loss(outputs["semantic"], targets, top_k=0.2).item() == pytest.approx(
        (halves[0] + halves[1]).item() / 2, rel=1e-5)
    # An image with no valid pixel takes no part.
    void = targets["semantic"].clone()
    void[1] = IGNORE_INDEX
    assert semantic_loss(outputs["semantic"], {"semantic": void}, top_k=0.2).item() == pytest.approx(
        per_image[0].item(), rel=1e-5)
    with pytest.raises(ValueError, match="semantic_top_k"):
        casnet_losses(outputs, targets, semantic_top_k=0.0)


def test_small_instance_weight_and_full_resolution_labels():
    outputs, targets = _batch()
    # Labels at 4x the logits' resolution; a corner of small-instance pixels.
    full = targets["semantic"].repeat_interleave(4, 1).repeat_interleave(4, 2)
    small = torch.zeros_like(full, dtype=torch.bool)
    small[:, :8, :8] = True
    targets = {**targets, "semantic_full": full, "small_instance": small}
    logits = F.interpolate(outputs["semantic"], size=full.shape[-2:], mode="bilinear", align_corners=False)
    pixel = F.cross_entropy(logits, full, ignore_index=IGNORE_INDEX, reduction="none")
    weighted = (pixel * (1 + 2 * small.float()))[full != IGNORE_INDEX]
    assert semantic_loss(outputs["semantic"], targets, small_instance_weight=3.0).item() == pytest.approx(
        weighted.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="small_instance"):
        semantic_loss(outputs["semantic"], {"semantic": targets["semantic"]}, small_instance_weight=3.0)
    # Without the weight the small-instance map changes nothing.
    assert semantic_loss(outputs["semantic"], targets).item() == pytest.approx(
        pixel[full != IGNORE_INDEX].mean().item(), rel=1e-5)


def test_all_void_gives_a_zero_loss_in_the_graph():
    outputs, targets = _batch()
    targets["semantic"] = torch.full_like(targets["semantic"], IGNORE_INDEX)
    targets["thing_mask"] = torch.zeros_like(targets["thing_mask"])
    losses = casnet_losses(outputs, targets, attribute_loss="giou", semantic_top_k=0.2)
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()  # every head stays in the graph (DDP)
    assert outputs["semantic"].grad is not None and outputs["attributes"].grad is not None


def test_every_option_reaches_its_term():
    # casnet_losses passes each option to its term: recomputed here from the terms' own functions.
    outputs, targets = _batch()
    small = torch.zeros_like(targets["semantic"], dtype=torch.bool)
    small[:, :3, :3] = True
    targets["small_instance"] = small
    losses = casnet_losses(outputs, targets, alpha=0.5, beta=2.0, gamma=3.0, box_pos_weight=5.0,
                           attribute_loss="giou", semantic_top_k=0.2, small_instance_weight=3.0)
    thing = targets["thing_mask"]
    valid = (targets["semantic"] != IGNORE_INDEX).unsqueeze(1).expand(-1, 8, -1, -1)
    box_target = targets["box_prob"][valid]
    expected = {
        "semantic": semantic_loss(outputs["semantic"], targets, top_k=0.2, small_instance_weight=3.0),
        "attributes": (1 - generalized_iou(outputs["attributes"].permute(0, 2, 3, 1)[thing],
                                           targets["attributes"].permute(0, 2, 3, 1)[thing])).mean(),
        # Centre cells weigh 5, the others 1.
        "box_prob": F.binary_cross_entropy_with_logits(outputs["box_logits"][valid], box_target,
                                                       weight=torch.where(box_target > 0, 5.0, 1.0)),
    }
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5), key
    assert losses["loss"].item() == pytest.approx(
        0.5 * expected["semantic"].item() + 2 * expected["attributes"].item() + 3 * expected["box_prob"].item(),
        rel=1e-5)


def test_loss_options_are_checked_with_clear_messages():
    outputs, targets = _batch()
    with pytest.raises(ValueError, match=r"^attribute_loss must be one of \('l1', 'giou', 'l1_log'\), got 'iou'$"):
        casnet_losses(outputs, targets, attribute_loss="iou")
    with pytest.raises(ValueError, match=r"^attribute loss must be one of \('l1', 'giou', 'l1_log'\), got 'iou'$"):
        attribute_regression_loss(outputs["attributes"][0, :, 0], targets["attributes"][0, :, 0], kind="iou")
    for top_k in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^semantic_top_k must be in \(0, 1\], got {top_k}$"):
            casnet_losses(outputs, targets, semantic_top_k=top_k)
    with pytest.raises(ValueError, match=r"^small_instance_weight needs the 'small_instance' target"):
        semantic_loss(outputs["semantic"], targets, small_instance_weight=2.0)


def test_giou_loss_of_known_boxes_and_the_default_kind():
    same, inner, outer = torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[2.0, 2, 2, 2]])
    assert attribute_regression_loss(same, same, kind="giou").item() == pytest.approx(0.0, abs=1e-5)
    assert attribute_regression_loss(inner, outer, kind="giou").item() == pytest.approx(0.75, abs=1e-5)
    # Diagonal quadrants of the shared point: no overlap, union 2, enclosing box 2x2 = 4: GIoU = 0 - 2/4.
    upper_left, lower_right = torch.tensor([[1.0, 1, 0, 0]]), torch.tensor([[0.0, 0, 1, 1]])
    assert generalized_iou(upper_left, lower_right).item() == pytest.approx(-0.5, abs=1e-5)
    assert attribute_regression_loss(upper_left, lower_right, kind="giou").item() == pytest.approx(1.5, abs=1e-5)
    # kind defaults to the paper's L1.
    assert attribute_regression_loss(inner, outer).item() == pytest.approx(1.0)


def test_hard_pixel_mining_with_few_and_easy_pixels():
    # Image 0: one valid pixel (the rest void); image 1: three valid pixels, all predicted right with confidence
    # (losses ~0) beside void ones. With top_k 0.2 each image keeps round(0.2 n) pixels but at least one:
    # image 0 its one pixel, image 1 its hardest one; void pixels never count, however small the valid losses.
    logits = torch.zeros(2, 3, 2, 2)
    labels = torch.full((2, 2, 2), IGNORE_INDEX)
    labels[0, 0, 0] = 0  # loss log 3 (uniform logits)
    labels[1, 0, :] = 1
    labels[1, 1, 0] = 1
    logits[1, 1] = torch.tensor([[8.0, 9.0], [10.0, 0.0]])  # class 1 confident at the three valid pixels
    pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    hardest_of_image_1 = pixel[1][labels[1] != IGNORE_INDEX].max()
    assert hardest_of_image_1 < 1e-3
    expected = (torch.log(torch.tensor(3.0)) + hardest_of_image_1) / 2
    assert semantic_loss(logits, {"semantic": labels}, top_k=0.2).item() == pytest.approx(expected.item(), rel=1e-5)
