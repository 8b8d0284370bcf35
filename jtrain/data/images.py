"""A folder of image files as arrays: class subfolders, optional train / val / test folders above them.

    root/train/<class>/*.png|jpg|jpeg   (+ root/val/..., root/test/...)   roles train / val / test
    root/<class>/*.png|jpg|jpeg                                           one pool, role "all"

Every image is read with Pillow, turned into "L" or "RGB" and resized to (H, W) with the BILINEAR filter
(antialiased when shrinking, like torchvision's and tf.image's default), so `read_image` on a new file gives
what training saw.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from PIL import Image, ImageOps

from jtrain.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROLE_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
RESAMPLE = Image.Resampling.BILINEAR
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# Modes with a sensible 8-bit meaning; float ("F") and the rest have no agreed range, so they are refused.
READABLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", *SIXTEEN_BIT_MODES)


def _visible_dirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _is_image_file(entry: os.DirEntry) -> bool:
    return (entry.is_file() and not entry.name.startswith(".")
            and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES)


def _image_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, e.name) for e in os.scandir(folder) if _is_image_file(e))


def _class_folders(folder: str) -> list[str]:
    classes = _visible_dirs(folder)
    if not classes:
        raise DataError(f"{folder}: no class subfolders; put each class's images in a subfolder named after it")
    if len(classes) == 1:
        raise DataError(f"{folder}: only one class folder ({classes[0]!r}); a classifier needs at least 2")
    return classes


def layout(root: str) -> dict[str, str]:
    """role -> folder: train / val / test folders (train required) if root has them, else {"all": root}."""
    if not os.path.exists(root):
        raise DataError(f"{root}: no such image folder")
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder; give a folder of class subfolders (or of train/val/test folders)")
    subfolders = _visible_dirs(root)
    split_folders = [d for d in subfolders if d.lower() in ROLE_FOLDERS]
    if not split_folders:
        _class_folders(root)
        return {"all": root}
    others = [d for d in subfolders if d.lower() not in ROLE_FOLDERS]
    if others:
        raise DataError(f"{root}: has split folders ({', '.join(split_folders)}) and other folders "
                        f"({', '.join(others)}); put class folders inside train/val/test, or drop the split folders")
    roles: dict[str, str] = {}
    for d in split_folders:
        role = ROLE_FOLDERS[d.lower()]
        if role in roles:
            raise DataError(f"{root}: both {os.path.basename(roles[role])!r} and {d!r} are {role} folders; keep one")
        roles[role] = os.path.join(root, d)
    if "train" not in roles:
        raise DataError(f"{root}: has {', '.join(split_folders)} but no train folder; add root/train/<class>/...")
    for folder in roles.values():
        _class_folders(folder)
    return {role: roles[role] for role in ("train", "val", "test") if role in roles}


def files(root: str) -> list[str]:
    """Every image file under root (hidden files and folders skipped), sorted: what a fingerprint hashes."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _open(path: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here, not later
        return ImageOps.exif_transpose(img)  # camera JPEGs store their rotation in EXIF
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from e


def _channels_of(path: str, img: Image.Image) -> int:
    if img.mode not in READABLE_MODES:
        raise DataError(f"{path}: image mode {img.mode!r} cannot be read as 8-bit gray or RGB; "
                        f"save it as an 8-bit PNG or JPEG")
    return 1 if img.mode in GRAY_MODES else 3


def _convert(path: str, img: Image.Image, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """(H, W, C) uint8 of one opened image."""
    _channels_of(path, img)
    mode = img.mode
    try:
        if mode in SIXTEEN_BIT_MODES:
            # Pillow's own conversion clips 16-bit values at 255; scale the full range down instead.
            wide = np.asarray(img, dtype=np.int64)
            img = Image.fromarray(np.clip((wide + 128) // 257, 0, 255).astype(np.uint8), mode="L")
        if mode in ("LA", "PA", "RGBA") or (mode == "P" and "transparency" in img.info):
            # Transparent pixels become black (alpha premultiplied), whatever colour they hide.
            rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
            rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
            img = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
        img = img.convert("L" if channels == 1 else "RGB")
        height, width = image_size
        if img.size != (width, height):
            img = img.resize((width, height), RESAMPLE)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: image mode {mode!r} cannot be converted to {'L' if channels == 1 else 'RGB'} "
                        f"({e})") from e
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if channels == 1 else array  # (H, W, C)


def _check_request(image_size, channels) -> tuple[tuple[int, int], int]:
    if channels not in (0, 1, 3):
        raise DataError(f"image channels must be 0 (infer), 1 or 3, not {channels!r}")
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise DataError(f"image size must be (height, width) of positive ints, not {tuple(image_size)!r}")
    return (int(image_size[0]), int(image_size[1])), channels


def infer_channels(path: str) -> int:
    """1 if the image at path is grayscale, else 3."""
    return _channels_of(path, _open(path))


def read_image(path: str, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 (H, W, C), converted as read_folder converts (channels=0: 1 if grayscale, else 3)."""
    image_size, channels = _check_request(image_size, channels)
    img = _open(path)
    return _convert(path, img, image_size, channels or _channels_of(path, img))


def convert_pil(img: Image.Image, image_size: tuple[int, int], channels: int, where: str = "image") -> np.ndarray:
    """An image already opened (e.g. from a Hugging Face dataset) as uint8 (H, W, C); `where` names it in errors."""
    image_size, channels = _check_request(image_size, channels)
    return _convert(where, img, image_size, channels or _channels_of(where, img))


def read_folder(folder: str, class_names: tuple[str, ...] | None, image_size: tuple[int, int],
                channels: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (N, H, W, C), labels int32 (N,), class_names) of folder/<class>/<image>.

    Classes are the sorted subfolder names, or `class_names` (the train folder's, for val / test): a class folder
    not among them is an error, a class without a folder has no examples here. Files are in sorted order within
    each class; channels=0 infers 1 or 3 from the first image.
    """
    image_size, channels = _check_request(image_size, channels)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such image folder")
    given = class_names is not None
    folders = _visible_dirs(folder) if given else _class_folders(folder)
    if given:
        unknown = [c for c in folders if c not in class_names]
        if unknown:
            raise DataError(f"{folder}: class folder(s) {', '.join(map(repr, unknown))} are not among the training "
                            f"classes ({', '.join(class_names)})")
    names = tuple(class_names) if given else tuple(folders)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        class_dir = os.path.join(folder, name)
        found = _image_files(class_dir) if os.path.isdir(class_dir) else []
        if not found and not given:
            raise DataError(f"{class_dir}: no {'/'.join(IMAGE_SUFFIXES)} images in this class folder")
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DataError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images in its class folders")
    if channels == 0:
        channels = infer_channels(paths[0])
    images = np.empty((len(paths), *image_size, channels), dtype=np.uint8)  # (N, H, W, C)

    def decode(i: int) -> None:
        images[i] = _convert(paths[i], _open(paths[i]), image_size, channels)

    # Pillow decodes without the GIL, so threads overlap; files are taken in order and the first bad one raises.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(paths)))
    try:
        for _ in pool.map(decode, range(len(paths))):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return images, np.asarray(labels, dtype=np.int32), names  # (N, H, W, C), (N,)
