"""Hugging Face datasets as arrays or DataFrames: a `save_to_disk` folder, parquet / arrow files, or a Hub name.

    load(name_or_path)            -> datasets.DatasetDict (split name -> Dataset)
    splits(dsdict)                -> role -> split name (train / validation|valid|val / test)
    to_frames(dsdict)             -> role -> pandas.DataFrame, for tabular datasets
    image_column(ds), label_column(ds), label_names(ds, column)
    to_images(ds, image_column, label_column, image_size, channels) -> (uint8 (N, H, W, C), int32 (N,))
    read(name_or_path)            -> role -> DataFrame, or role -> (images, labels, class_names) for image datasets

The Hub is asked first with one short request, so a machine without network fails in seconds instead of after
the `datasets` library's retries; HF_HUB_OFFLINE=1 skips the request and reads the local Hugging Face cache.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import threading
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from jtrain.data import images
from jtrain.errors import DataError

if TYPE_CHECKING:
    import datasets
    import pandas

SPLIT_ROLES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}
DATA_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
HUB_TIMEOUT_S = 4.0  # the one request asking the Hub whether the name exists

_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _save_instructions(name: str) -> str:
    return (f"on a machine with internet run `datasets.load_dataset({name!r}).save_to_disk(DIR)`, copy DIR here "
            f"and pass hf:DIR (or set HF_HUB_OFFLINE=1 to use a copy in the Hugging Face cache)")


def _looks_like_path(name: str) -> bool:
    # Hub ids are NAME or OWNER/NAME; anything else is meant as a file or folder.
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or os.path.splitext(name)[1].lower() in DATA_SUFFIXES)


def _load_local(path: str, label: str) -> "datasets.DatasetDict":
    import datasets

    try:
        if os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _SAVE_TO_DISK_MARKERS):
            loaded = datasets.load_from_disk(path)
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        if os.path.isfile(path):
            kind = DATA_SUFFIXES.get(os.path.splitext(path)[1].lower())
            if kind is None:
                raise DataError(f"{label}: {path} is not a .parquet or .arrow file (nor a save_to_disk folder)")
            return datasets.load_dataset(kind, data_files=path)
        kinds = {DATA_SUFFIXES[os.path.splitext(f)[1].lower()] for _, _, fs in os.walk(path) for f in fs
                 if os.path.splitext(f)[1].lower() in DATA_SUFFIXES}
        if len(kinds) != 1:
            found = "both .parquet and .arrow files" if kinds else "no save_to_disk files, .parquet or .arrow files"
            raise DataError(f"{label}: folder {path} has {found}; give a save_to_disk folder or files of one kind")
        # Split names come from the file or folder names (train*, test*, validation*), as on the Hub.
        return datasets.load_dataset(kinds.pop(), data_dir=path)
    except DataError:
        raise
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        raise DataError(f"{label}: cannot read {path}: {_one_line(e)}") from e


def _hub_status(name: str) -> str:
    """'found', 'missing', 'gated', 'invalid' or 'unreachable', from one request bounded in time."""
    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    answer = ["unreachable"]

    def ask() -> None:
        try:
            huggingface_hub.HfApi().dataset_info(name, timeout=HUB_TIMEOUT_S)
            answer[0] = "found"
        except hub_errors.GatedRepoError:
            answer[0] = "gated"
        except hub_errors.RepositoryNotFoundError:
            answer[0] = "missing"
        except hub_errors.HFValidationError:
            answer[0] = "invalid"
        except Exception:  # any network failure (DNS, refused, timeout, proxy, 5xx): the Hub is not usable now
            answer[0] = "unreachable"

    # A thread, since name resolution can hang past the request's own timeout.
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S + 1.0)
    return answer[0]


def _load_hub(name: str, label: str) -> "datasets.DatasetDict":
    import datasets
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        status = _hub_status(name)
        if status == "invalid":
            raise DataError(f"{label}: {name!r} is neither a local folder or file nor a valid Hub dataset name")
        if status == "missing":
            raise DataError(f"{label}: {name!r} is neither a local folder or file nor a dataset on the Hugging Face "
                            f"Hub (a private one needs `hf auth login`)")
        if status == "gated":
            raise DataError(f"{label}: the Hub dataset {name!r} is gated: accept its terms on huggingface.co and "
                            f"log in with `hf auth login`")
        if status == "unreachable":
            raise DataError(f"{label}: {name!r} is neither a local folder or file nor reachable on the Hugging Face "
                            f"Hub (no network?); {_save_instructions(name)}")
    try:
        loaded = datasets.load_dataset(name)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        where = " (HF_HUB_OFFLINE is set and it is not in the Hugging Face cache)" if constants.HF_HUB_OFFLINE else ""
        raise DataError(f"{label}: cannot load the Hub dataset {name!r}{where}: {_one_line(e)}") from e
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def load(name_or_path: str, source_label: str = "") -> "datasets.DatasetDict":
    """A save_to_disk folder (a Dataset becomes split "train"), a parquet / arrow file or folder, else a Hub name."""
    label = source_label or f"hf:{name_or_path}"
    path = os.path.expanduser(name_or_path)
    if os.path.exists(path):
        dsdict = _load_local(path, label)
    elif _looks_like_path(name_or_path):
        raise DataError(f"{label}: no such file or folder {path}")
    else:
        dsdict = _load_hub(name_or_path, label)
    if not dsdict:
        raise DataError(f"{label}: the dataset has no splits")
    return dsdict


def splits(dsdict: "datasets.DatasetDict", source_label: str = "") -> dict[str, str]:
    """role -> split name. Splits of other names (e.g. "unsupervised") are left out; none known is an error."""
    label = source_label or "hf dataset"
    roles: dict[str, str] = {}
    for split in dsdict:
        role = SPLIT_ROLES.get(str(split).lower())
        if role is None:
            continue
        if role in roles:
            raise DataError(f"{label}: splits {roles[role]!r} and {split!r} are both the {role} split; keep one")
        roles[role] = str(split)
    if not roles:
        raise DataError(f"{label}: no split named train, validation (valid, val, dev) or test among "
                        f"{', '.join(map(str, dsdict))}")
    if "train" not in roles:
        raise DataError(f"{label}: no train split (splits: {', '.join(map(str, dsdict))})")
    return {role: roles[role] for role in ("train", "val", "test") if role in roles}


def to_frames(dsdict: "datasets.DatasetDict", source_label: str = "") -> dict[str, "pandas.DataFrame"]:
    """role -> the split as a DataFrame (ClassLabel columns stay integer codes; see label_names)."""
    return {role: dsdict[split].to_pandas() for role, split in splits(dsdict, source_label).items()}


def image_column(ds: "datasets.Dataset") -> str | None:
    """The dataset's one `datasets.Image` column, None if it has none; several are an error."""
    import datasets

    found = [name for name, feature in ds.features.items() if isinstance(feature, datasets.Image)]
    if len(found) > 1:
        raise DataError(f"{_where(ds)}: several image columns ({', '.join(found)}); one is read as the input")
    return found[0] if found else None


def label_column(ds: "datasets.Dataset") -> str:
    """The label of an image dataset: its one ClassLabel column, else a column named label / labels."""
    import datasets

    class_labels = [name for name, feature in ds.features.items() if isinstance(feature, datasets.ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    named = [name for name in ("label", "labels") if name in ds.features]
    if named:
        return named[0]
    raise DataError(f"{_where(ds)}: no label column (a ClassLabel, or one named label) among "
                    f"{', '.join(ds.column_names)}")


def label_names(ds: "datasets.Dataset", column: str) -> tuple[str, ...]:
    """A ClassLabel column's names; for a plain int / str column, its sorted distinct values as strings."""
    import datasets

    if column not in ds.features:
        raise DataError(f"{_where(ds)}: no column {column!r} (columns: {', '.join(ds.column_names)})")
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names)
    dtype = getattr(feature, "dtype", None)
    if not isinstance(feature, datasets.Value) or not (dtype.startswith(("int", "uint")) or dtype == "string"):
        raise DataError(f"{_where(ds)}: label column {column!r} is {feature}, not class labels (ClassLabel, int or "
                        f"string)")
    values = ds.unique(column)
    if None in values:
        raise DataError(f"{_where(ds)}: label column {column!r} has missing values")
    return tuple(str(v) for v in sorted(values))


def _where(ds: "datasets.Dataset") -> str:
    split = getattr(ds, "split", None)
    return f"split {split}" if split is not None else "dataset"


def to_images(ds: "datasets.Dataset", image_column: str, label_column: str, image_size: tuple[int, int],
              channels: int, class_names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, C), labels int32 (N,)), each image converted as images.read_folder converts files.

    Labels are a ClassLabel column's codes; a plain int / str column is coded by its position in `class_names`
    (default: label_names of this split). channels=0 infers 1 or 3 from the first image.
    """
    import datasets

    for column in (image_column, label_column):
        if column not in ds.features:
            raise DataError(f"{_where(ds)}: no column {column!r} (columns: {', '.join(ds.column_names)})")
    if not isinstance(ds.features[image_column], datasets.Image):
        raise DataError(f"{_where(ds)}: column {image_column!r} is {ds.features[image_column]}, not an Image")
    if len(ds) == 0:
        raise DataError(f"{_where(ds)}: no rows")
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        if class_names is not None and tuple(feature.names) != tuple(class_names):
            raise DataError(f"{_where(ds)}: label column {label_column!r} has classes {', '.join(feature.names)}, "
                            f"not the training classes {', '.join(class_names)}")
        labels = np.asarray(ds[label_column], dtype=np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= feature.num_classes))
        if bad.size:
            raise DataError(f"{_where(ds)}: row {bad[0]} has label {labels[bad[0]]} (unlabelled rows are -1); "
                            f"labels must be 0..{feature.num_classes - 1}")
    else:
        names = class_names if class_names is not None else label_names(ds, label_column)
        codes = {name: i for i, name in enumerate(names)}
        raw = ds[label_column]
        unknown = [(i, v) for i, v in enumerate(raw) if str(v) not in codes]
        if unknown:
            raise DataError(f"{_where(ds)}: row {unknown[0][0]} has label {unknown[0][1]!r}, not among the training "
                            f"classes ({', '.join(names)})")
        labels = np.asarray([codes[str(v)] for v in raw], dtype=np.int64)

    # Undecoded (bytes / path) so Pillow decodes in threads, through the same conversion as image files.
    stored = ds.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    cells = stored[image_column]

    def open_cell(i: int):
        cell = cells[i]
        where = f"{_where(ds)} row {i}"
        try:
            img = Image.open(io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"])
            img.load()
        except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as e:
            raise DataError(f"{where}: not a readable image ({_one_line(e)})") from e
        return img, where

    first, where = open_cell(0)
    channels = channels or images.convert_pil(first, image_size, 0, where).shape[-1]
    out = np.empty((len(cells), *image_size, channels), dtype=np.uint8)  # (N, H, W, C)

    def decode(i: int) -> None:
        img, where = open_cell(i)
        out[i] = images.convert_pil(img, image_size, channels, where)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(cells)))
    try:
        for _ in pool.map(decode, range(len(cells))):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out, labels.astype(np.int32)  # (N, H, W, C), (N,)


def read(name_or_path: str, source_label: str = "", *, image_size: tuple[int, int] | None = None,
         channels: int = 0) -> dict[str, "pandas.DataFrame"] | dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...]]]:
    """role -> DataFrame for a tabular dataset; role -> (images, labels, class_names) for one with an Image column.

    Image datasets take their label from label_column and their class names from the train split; image_size
    None = the first training image's (H, W).
    """
    label = source_label or f"hf:{name_or_path}"
    dsdict = load(name_or_path, label)
    roles = splits(dsdict, label)
    train = dsdict[roles["train"]]
    column = image_column(train)
    if column is None:
        return to_frames(dsdict, label)
    target = label_column(train)
    names = label_names(train, target)
    if image_size is None:
        first = train[0][column]
        image_size = (first.height, first.width)
    out = {}
    for role, split in roles.items():
        ds = dsdict[split]
        if image_column(ds) != column or target not in ds.features:
            raise DataError(f"{label}: split {split} lacks the train split's columns {column!r} and {target!r}")
        pixels, labels = to_images(ds, column, target, image_size, channels, names)
        channels = pixels.shape[-1]  # every split as the train split was read
        out[role] = (pixels, labels, names)
    return out
