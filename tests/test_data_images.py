"""Image folders in the ImageNet layout as one-frame videos, with ADM's centre crop."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from ulvideo.data import BadFileWarning, ImageFolder, adm_center_crop, build_dataset


def test_adm_center_crop_box_halves_then_crops_the_centre():
    # 2048 x 1024 image whose value is x // 8: two box halvings (min side 1024 -> 256) give
    # column j the value j // 2 exactly; the centre 256 of 512 columns are 128 .. 383.
    columns = (np.arange(2048) // 8).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(columns, (1024, 2048)).copy()).convert("RGB")
    crop = adm_center_crop(image, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop[100, :, 1], np.arange(128, 384) // 2)


def test_adm_center_crop_keeps_an_image_of_the_target_size_and_a_flat_colour():
    astronaut = skdata.astronaut()  # 512 x 512
    np.testing.assert_array_equal(adm_center_crop(Image.fromarray(astronaut), 512), astronaut)
    flat = Image.new("RGB", (300, 170), (200, 40, 90))  # upscaled by 64 / 170, bicubic
    np.testing.assert_array_equal(adm_center_crop(flat, 64), np.full((64, 64, 3), (200, 40, 90)))


@pytest.fixture
def imagenet(tmp_path):
    """train/<class>/*.JPEG from real photographs, one unreadable file; val/ flat (unlabelled)."""
    photos = {"n01": [skdata.astronaut(), skdata.coffee()], "n02": [skdata.chelsea()]}
    for name, images in photos.items():
        (tmp_path / "train" / name).mkdir(parents=True)
        for i, array in enumerate(images):
            Image.fromarray(array).save(tmp_path / "train" / name / f"{name}_{i}.JPEG", quality=95)
    (tmp_path / "train" / "n02" / "broken.JPEG").write_bytes(b"not a jpeg at all")
    (tmp_path / "val").mkdir()
    Image.fromarray(skdata.rocket()).save(tmp_path / "val" / "v0.png")
    return tmp_path


def test_image_folder_yields_labelled_one_frame_videos(imagenet):
    dataset = ImageFolder(imagenet, resolution=64, train=False, max_bad_fraction=0.5)
    assert dataset.classes == ["n01", "n02"] and dataset.num_classes == 2 and len(dataset) == 4
    items = [dataset[i] for i in (0, 1, 3)]  # astronaut, coffee, chelsea
    assert [label for _, label in items] == [0, 0, 1]
    for video, _ in items:
        assert video.shape == (3, 1, 64, 64) and video.dtype == torch.float32
        assert video.min() >= -1 and video.max() <= 1
    reference = adm_center_crop(Image.open(imagenet / "train" / "n01" / "n01_0.JPEG"), 64).copy()
    torch.testing.assert_close(
        items[0][0][:, 0], torch.from_numpy(reference).permute(2, 0, 1) / 127.5 - 1
    )
    val = ImageFolder(imagenet, split="val", resolution=64)
    assert len(val) == 1 and val[0][1] == -1 and val.classes == ["n01", "n02"]


def test_unreadable_image_is_skipped_with_a_warning(imagenet):
    dataset = ImageFolder(imagenet, resolution=32, train=False, max_bad_fraction=0.5)
    broken = [i for i, path in enumerate(dataset.paths) if path.endswith("broken.JPEG")]
    with pytest.warns(BadFileWarning, match="broken.JPEG"):
        video, label = dataset[broken[0]]
    assert label == 1  # the next image, chelsea
    torch.testing.assert_close(video, dataset[broken[0] + 1][0])
    assert list(dataset.bad_files) == [dataset.paths[broken[0]]]


def test_training_flips_half_the_images_deterministically(imagenet):
    evaluation = ImageFolder(imagenet, resolution=32, train=False, max_bad_fraction=0.5)
    training = ImageFolder(imagenet, resolution=32, seed=3, max_bad_fraction=0.5)
    assert training.train and not evaluation.train
    flips = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadFileWarning)
        for epoch in range(12):
            training.set_epoch(epoch)
            video, _ = training[0]
            again, _ = training[0]
            torch.testing.assert_close(video, again, rtol=0, atol=0)
            plain = evaluation[0][0]
            assert torch.equal(video, plain) or torch.equal(video, plain.flip(-1))
            flips.append(not torch.equal(video, plain))
    assert 0 < sum(flips) < 12


def test_image_folder_defaults_to_512_pixels(imagenet):
    video, _ = ImageFolder(imagenet, train=False)[0]
    assert video.shape == (3, 1, 512, 512)


def test_bad_image_roots_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*train/<class name>/\\*.JPEG"):
        ImageFolder(tmp_path / "absent")
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"no images found under {tmp_path / 'train'}"):
        build_dataset("imagenet", tmp_path, "train", 1, 64)
    with pytest.raises(ValueError, match="1-frame videos; got frames=17"):
        build_dataset("imagenet", tmp_path, "train", 17, 64)
