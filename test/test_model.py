"""The network, its losses and its checkpoints, with real timm backbones."""

import pytest
import torch

from casnet_core.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from casnet_core.labels import NUM_THING_CLASSES
from casnet_core.losses import casnet_losses
from casnet_core.model import build_casnet


@pytest.mark.parametrize(
    "backbone, mode, classes",
    [
        ("hrnet_w18_small", "panoptic", 19),
        ("hrnet_w18_small_v2", "instance", 9),
        ("hrnet_w48", "panoptic", 19),
        ("resnet18", "panoptic", 19),  # any timm model that gives features
    ],
)
def test_output_shapes_for_each_backbone(backbone, mode, classes):
    model = build_casnet(backbone, mode=mode, fusion_channels=32, head_channels=16).eval()
    assert model.output_stride == 4 and model.size_divisor == 32
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 64, 96) * 255)
    assert out["semantic"].shape == (2, classes, 16, 24)
    assert out["attributes"].shape == (2, 4, 16, 24)
    assert out["box_logits"].shape == (2, NUM_THING_CLASSES, 16, 24)
    assert (out["attributes"] >= 0).all()


def test_heads_read_the_backbone_channels():
    small, wide = build_casnet("hrnet_w18_small"), build_casnet("hrnet_w18_small_v2")
    assert small.backbone.channels == [16, 32, 64, 128]
    assert wide.backbone.channels == [18, 36, 72, 144]
    assert small.fusion.mix[0].in_channels == 240 and wide.fusion.mix[0].in_channels == 270


def test_separated_mode_has_no_semantic_head_and_no_semantic_loss():
    model = build_casnet("hrnet_w18_small", semantic_head=False, fusion_channels=32, head_channels=16)
    out = model(torch.rand(1, 3, 64, 64) * 255)
    assert "semantic" not in out and not model.has_semantic_head
    losses = casnet_losses(out, _random_targets(16, 16))
    assert losses["semantic"] == 0 and torch.isfinite(losses["loss"])


def test_input_not_a_multiple_of_the_divisor_is_refused():
    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.zeros(1, 3, 60, 64))


def _random_targets(h, w, classes=19):
    torch.manual_seed(1)
    semantic = torch.randint(0, classes, (1, h, w))
    semantic[0, 0] = 255
    thing = torch.rand(1, h, w) > 0.5
    return {
        "semantic": semantic,
        "attributes": torch.rand(1, 4, h, w) * 10 * thing.unsqueeze(1),
        "thing_mask": thing,
        "box_prob": (torch.rand(1, NUM_THING_CLASSES, h, w) > 0.95).float(),
    }


def test_losses_are_finite_weighted_and_backpropagate():
    import torch.nn.functional as F

    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16)
    out = model(torch.rand(1, 3, 64, 64) * 255)
    targets = _random_targets(16, 16)
    # Weights all different from 1 and from each other: a part that ignores its weight changes the total.
    losses = casnet_losses(out, targets, alpha=0.7, beta=0.5, gamma=2.0)
    for key in ("loss", "semantic", "attributes", "box_prob"):
        assert torch.isfinite(losses[key]) and losses[key] > 0
    # Each part is the paper's: CE over non-void cells, L1 over the thing cells only (4 distances each),
    # BCE over the non-void cells, computed here independently.
    thing = targets["thing_mask"][:, None].expand(-1, 4, -1, -1)
    l1 = (out["attributes"] - targets["attributes"]).abs()[thing].mean()
    assert not torch.isclose(l1, (out["attributes"] - targets["attributes"]).abs().mean()), \
        "thing cells and all cells must give different L1, or the test shows nothing"
    valid = (targets["semantic"] != 255)[:, None].expand_as(out["box_logits"])
    parts = {
        "semantic": F.cross_entropy(out["semantic"], targets["semantic"], ignore_index=255),
        "attributes": l1,
        "box_prob": F.binary_cross_entropy_with_logits(out["box_logits"][valid], targets["box_prob"][valid]),
    }
    for key, value in parts.items():
        torch.testing.assert_close(losses[key], value.detach(), msg=key)
    expected = 0.7 * parts["semantic"] + 0.5 * parts["attributes"] + 2.0 * parts["box_prob"]
    torch.testing.assert_close(losses["loss"].detach(), expected.detach())
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_losses_without_any_thing_pixel_are_finite():
    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16)
    out = model(torch.rand(1, 3, 64, 64) * 255)
    targets = _random_targets(16, 16)
    targets["thing_mask"][:] = False
    targets["semantic"][:] = 255
    losses = casnet_losses(out, targets)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()


def test_checkpoint_round_trip_needs_nothing_but_the_file(tmp_path):
    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="instance", fusion_channels=32, head_channels=16).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"step": 7})
    loaded, meta = load_model(path)
    assert meta["mode"] == "instance" and meta["step"] == 7 and meta["class_names"][0] == "background"
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.inference_mode():
        a, b = model(x), loaded(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write leaves no temporary file


def test_missing_corrupt_foreign_and_mismatched_checkpoints_fail_loudly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.pt")
    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16)
    good = save_checkpoint(tmp_path / "good.pt", model).read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "truncated.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a CASNet checkpoint"):
        load_model(tmp_path / "foreign.pt")
    # Weights of one architecture under the description of another.
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    payload["config"]["head_channels"] = 64
    torch.save(payload, tmp_path / "mismatched.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "mismatched.pt")


def test_checkpoint_edges_found_by_mutation_testing(tmp_path, monkeypatch):
    # docs/mutation.md: each check below failed to notice a mutant of casnet_core/checkpoint.py.
    model = build_casnet("hrnet_w18_small", fusion_channels=32, head_channels=16)
    # A run folder that does not exist yet, two levels deep: save creates it.
    path = save_checkpoint(tmp_path / "runs" / "new" / "m.pt", model)
    # map_location reaches torch.load (a callable sees every stored tensor's location).
    locations = []
    load_model(path, map_location=lambda storage, location: locations.append(location) or storage)
    assert locations and set(locations) == {"cpu"}
    assert read_checkpoint(path)["model"]["backbone.body.conv1.weight"].device.type == "cpu"  # the default location
    # The explicit weights_only=True holds even where the environment makes torch's default unsafe.
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "casnet-checkpoint/1", "evil": Evil()}, tmp_path / "evil.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match=r"\(\w+Error\); checkpoints are written by `casnet train`, "
                                              r"ONNX files \(\.onnx\) by `casnet export`$"):
        load_model(tmp_path / "evil.pt")
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    payload = torch.load(path, weights_only=True)

    def variant(name, change):
        changed = {**payload, "config": dict(payload["config"]), "model": dict(payload["model"])}
        change(changed)
        torch.save(changed, tmp_path / name)
        return tmp_path / name

    # A description the builder refuses: the message names the config.
    unbuildable = variant("unbuildable.pt", lambda p: p["config"].update(bogus=1))
    with pytest.raises(CheckpointError, match=r"unbuildable.pt: cannot build the model it describes \(\{.*'bogus': 1"):
        load_model(unbuildable)
    # A class list that is not the mode's.
    reordered = variant("reordered.pt", lambda p: p.update(class_names=p["class_names"][::-1]))
    with pytest.raises(CheckpointError, match=r"class list \['bicycle', 'motorcycle', .*\] does not match mode 'panoptic'"):
        load_model(reordered)
    # A weight missing: strict loading refuses instead of leaving it random.
    missing = variant("missing.pt", lambda p: p["model"].pop(next(iter(p["model"]))))
    with pytest.raises(CheckpointError, match="(?s)do not fit.*Missing key"):
        load_model(missing)
    # A weight the model does not have: refused too, not ignored.
    with pytest.raises(CheckpointError, match="(?s)do not fit.*Unexpected key"):
        load_model(variant("extra.pt", lambda p: p["model"].update(extra_weight=torch.zeros(1))))


def test_a_checkpoint_with_arbitrary_pickles_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "casnet-checkpoint/1", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "evil.pt")


def test_local_backbone_weights_are_loaded_from_a_file(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("hrnet_w18_small", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "hrnet_w18_small.pth")
    model = build_casnet("hrnet_w18_small", weights_path=str(tmp_path / "hrnet_w18_small.pth"))
    torch.testing.assert_close(model.backbone.body.conv1.weight, reference.conv1.weight)
    # A random model differs, so the equality above is the file's doing.
    assert not torch.equal(build_casnet("hrnet_w18_small").backbone.body.conv1.weight, reference.conv1.weight)


def test_box_pos_weight_scales_only_the_central_pixels():
    # Logits 0: p = 0.5 everywhere, so every element costs log 2.
    outputs = {"attributes": torch.zeros(1, 4, 2, 2), "box_logits": torch.zeros(1, NUM_THING_CLASSES, 2, 2)}
    targets = _random_targets(2, 2)
    targets["semantic"][:] = 0
    targets["box_prob"][:] = 0
    targets["box_prob"][0, 0, 0, 0] = 1  # one positive among 32 elements
    plain = casnet_losses(outputs, targets)["box_prob"]
    weighted = casnet_losses(outputs, targets, box_pos_weight=5.0)["box_prob"]
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(plain, log2)
    torch.testing.assert_close(weighted, log2 * (31 + 5) / 32)
