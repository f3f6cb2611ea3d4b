"""CO2-Net against outputs of the original implementation (../shared/fixtures/co2net)."""

from __future__ import annotations

import gzip
import io
import json
import pickle

import numpy as np
import pytest
import torch

from co2cli.checkpoints import load_co2net, read_state_dict
from co2cli.co2net import (CO2Net, activitynet_pool_kernel, classification_scores, co2_loss, run_co2net,
                           video_scores)
from co2cli.errors import Co2Error
from tests.shared_paths import CO2_FIXTURES, need

CKPT_GZ = CO2_FIXTURES / "reference_ckpt.pkl.gz"

# Keys, shapes and order from the fixture README (= CO2(2048, 20) and the official checkpoints).
OFFICIAL_LAYOUT = []
for branch in ("vAttn", "fAttn"):
    OFFICIAL_LAYOUT += [
        (f"{branch}.bit_wise_attn.0.weight", [1024, 1024, 3]), (f"{branch}.bit_wise_attn.0.bias", [1024]),
        (f"{branch}.channel_conv.0.weight", [1024, 1024, 3]), (f"{branch}.channel_conv.0.bias", [1024]),
        (f"{branch}.attention.0.weight", [512, 1024, 3]), (f"{branch}.attention.0.bias", [512]),
        (f"{branch}.attention.3.weight", [512, 512, 3]), (f"{branch}.attention.3.bias", [512]),
        (f"{branch}.attention.5.weight", [1, 512, 1]), (f"{branch}.attention.5.bias", [1]),
    ]
OFFICIAL_LAYOUT += [
    ("feat_encoder.0.weight", [2048, 2048, 3]), ("feat_encoder.0.bias", [2048]),
    ("fusion.0.weight", [2048, 2048, 1]), ("fusion.0.bias", [2048]),
    ("classifier.1.weight", [2048, 2048, 3]), ("classifier.1.bias", [2048]),
    ("classifier.4.weight", [21, 2048, 1]), ("classifier.4.bias", [21]),
]


@pytest.fixture(scope="module")
def model() -> CO2Net:
    return load_co2net(need(CKPT_GZ))


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory) -> "Path":
    path = tmp_path_factory.mktemp("ckpt") / "best_CO2.pkl"
    path.write_bytes(gzip.decompress(need(CKPT_GZ).read_bytes()))
    return path


def test_state_dict_layout_is_official() -> None:
    sd = CO2Net(20).state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == OFFICIAL_LAYOUT


def test_seeded_init_equals_original() -> None:
    """The reference checkpoint keeps 1 % of the original's seed-0 init x 10: our seed-0 init must agree there."""
    sd = read_state_dict(need(CKPT_GZ))
    torch.manual_seed(0)
    ours = CO2Net(20).state_dict()
    for key, value in ours.items():
        if key.endswith(".weight"):
            kept = sd[key] != 0
            assert int(kept.sum()) == round(0.01 * value.numel())
            torch.testing.assert_close(sd[key][kept], value[kept] * 10, rtol=0, atol=0)


@pytest.mark.parametrize("T", [1, 7, 64, 320])
def test_forward_matches_original(model: CO2Net, T: int) -> None:
    case = np.load(need(CO2_FIXTURES / "forward_cases.npz"))
    out = run_co2net(model, case[f"T{T}_input"].astype(np.float32))
    for key in ("feat", "cas"):
        np.testing.assert_allclose(out[key].numpy(), case[f"T{T}_{key}"], atol=1e-5, rtol=1e-4)
    for key in ("attn", "v_atn", "f_atn"):
        np.testing.assert_allclose(out[key].numpy(), case[f"T{T}_{key}"], atol=2e-6, rtol=0)
    np.testing.assert_allclose(video_scores(out["cas"], out["attn"]), case[f"T{T}_pred_vid_score"], atol=1e-6)
    np.testing.assert_allclose(classification_scores(out["cas"]), case[f"T{T}_cls_score_testpy"], atol=1e-6)


def test_plain_and_legacy_checkpoints_load(model: CO2Net, plain_ckpt, tmp_path) -> None:
    plain = load_co2net(plain_ckpt)
    legacy = tmp_path / "legacy.pkl"
    torch.save(read_state_dict(plain_ckpt), legacy, _use_new_zipfile_serialization=False)
    for other in (plain, load_co2net(legacy)):
        for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)


def test_loss_matches_original(model: CO2Net) -> None:
    case = np.load(need(CO2_FIXTURES / "loss_case.npz"))
    expected = json.loads((CO2_FIXTURES / "loss_case.json").read_text())
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(case["input"].astype(np.float32)))
        total, parts = co2_loss(out, torch.from_numpy(case["labels"]))
    np.testing.assert_allclose(float(total), expected["total_loss"], rtol=1e-5)
    np.testing.assert_allclose(parts["loss_mil_orig"].numpy(), case["loss_mil_orig"], rtol=1e-5)
    np.testing.assert_allclose(parts["loss_mil_supp"].numpy(), case["loss_mil_supp"], rtol=1e-5)
    np.testing.assert_allclose(parts["cas_supp"].numpy(), case["cas_supp"], atol=1e-5, rtol=1e-4)
    for name, value in expected["components"].items():
        got = parts[name.removesuffix("_mean")].mean()
        np.testing.assert_allclose(float(got), value, rtol=1e-5, err_msg=name)


def test_loss_on_synthetic_outputs() -> None:
    case = np.load(need(CO2_FIXTURES / "loss_case.npz"))
    expected = json.loads((CO2_FIXTURES / "loss_case.json").read_text())["synthetic_criterion_case"]
    outputs = {k: torch.from_numpy(case[f"syn_{k}"]) for k in ("feat", "cas", "attn", "v_atn", "f_atn")}
    total, parts = co2_loss(outputs, torch.from_numpy(case["syn_labels"]))
    np.testing.assert_allclose(float(total), expected["total_loss"], rtol=1e-5)
    np.testing.assert_allclose(parts["cas_supp"].numpy(), case["syn_cas_supp"], atol=1e-6)
    np.testing.assert_allclose(parts["loss_mil_orig"].numpy(), case["syn_loss_mil_orig"], rtol=1e-5)


def test_contrastive_without_shared_class_is_nan() -> None:
    """As in the original, no shared class among the pairs gives 0/0 = NaN (the trainer's sampler avoids it)."""
    torch.manual_seed(1)
    outputs = {"feat": torch.rand(6, 10, 8), "cas": torch.randn(6, 10, 5), "attn": torch.rand(6, 10, 1),
               "v_atn": torch.rand(6, 10, 1), "f_atn": torch.rand(6, 10, 1)}
    labels = torch.eye(4)[[0, 1, 2, 3, 0, 1]]
    _, parts = co2_loss(outputs, labels)
    assert torch.isnan(parts["contrastive"])


def test_activitynet_variant_smooths_and_loads_official_keys() -> None:
    kernel = activitynet_pool_kernel(max_seqlen=60, t=5)
    assert kernel == 13
    ant = CO2Net(100, temporal_pool_kernel=kernel).eval()
    assert [k for k in ant.state_dict()] == [k for k, _ in OFFICIAL_LAYOUT]
    assert ant.state_dict()["classifier.4.weight"].shape == (101, 2048, 1)
    plain = CO2Net(100).eval()
    plain.load_state_dict(ant.state_dict(), strict=True)
    x = torch.rand(1, 40, 2048)
    with torch.no_grad():
        smoothed, raw = ant(x), plain(x)
    for key in ("cas", "attn", "v_atn", "f_atn"):
        # count_include_pad=True: zeros enter the window near both ends, as in the original ANT_CO2
        want = torch.nn.functional.avg_pool1d(raw[key].transpose(1, 2), kernel, 1, kernel // 2,
                                              count_include_pad=True).transpose(1, 2)
        torch.testing.assert_close(smoothed[key], want)
    torch.testing.assert_close(smoothed["feat"], raw["feat"])


# ---- bad checkpoints: one Co2Error line each --------------------------------------------------------------


def _expect_error(path, fragment: str) -> None:
    with pytest.raises(Co2Error) as info:
        load_co2net(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_missing_and_empty_checkpoint(tmp_path) -> None:
    _expect_error(tmp_path / "nope.pkl", "not found")
    (tmp_path / "empty.pkl").write_bytes(b"")
    _expect_error(tmp_path / "empty.pkl", "empty")


def test_truncated_and_foreign_files(plain_ckpt, tmp_path) -> None:
    data = plain_ckpt.read_bytes()
    (tmp_path / "trunc.pkl").write_bytes(data[: len(data) // 3])
    _expect_error(tmp_path / "trunc.pkl", "not a readable PyTorch")
    (tmp_path / "text.pkl").write_text("hello, I am not a checkpoint\n")
    _expect_error(tmp_path / "text.pkl", "not a readable PyTorch")
    (tmp_path / "short.pkl").write_bytes(b"junk")
    _expect_error(tmp_path / "short.pkl", "not a readable PyTorch")
    (tmp_path / "trunc.gz").write_bytes(need(CKPT_GZ).read_bytes()[:1000])
    _expect_error(tmp_path / "trunc.gz", "damaged gzip")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pkl"
    torch.save({"x": _Evil()}, path)
    _expect_error(path, "refused by the safe loader")
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    _expect_error(raw, "")


def test_wrong_keys_and_shapes(plain_ckpt, tmp_path) -> None:
    sd = read_state_dict(plain_ckpt)
    missing = dict(sd)
    del missing["feat_encoder.0.weight"]
    torch.save(missing, tmp_path / "missing.pkl")
    _expect_error(tmp_path / "missing.pkl", "missing key")
    extra = dict(sd, **{"extra.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pkl")
    _expect_error(tmp_path / "extra.pkl", "unexpected key")
    shaped = dict(sd, **{"fusion.0.weight": torch.zeros(2048, 2048, 3)})
    torch.save(shaped, tmp_path / "shape.pkl")
    _expect_error(tmp_path / "shape.pkl", "fusion.0.weight has shape")
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pkl")
    _expect_error(tmp_path / "other.pkl", "not a CO2-Net checkpoint")
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    (tmp_path / "list.pkl").write_bytes(buf.getvalue())
    _expect_error(tmp_path / "list.pkl", "state dict of tensors")
