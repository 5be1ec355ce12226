"""The one maker of tiny test data for every test package.

Image files of every supported kind, class folders and chest-X-ray layouts, and
`run`, which calls a tf stage eagerly or inside Dataset.map.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

# A stage is tested both ways: eager and graph code differ (static shapes, Python vs ops).
MODES = ("eager", "map")


def run(mode, fn, *args):
    """fn(*args) called eagerly, or as the map function of a one-element dataset."""
    import tensorflow as tf

    if mode == "eager":
        return tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    dataset = tf.data.Dataset.from_tensors(tuple(args)).map(fn)
    return next(iter(dataset.as_numpy_iterator()))


def pil_pixels(path, mode):
    """The file's pixels as PIL reads them, converted to `mode`."""
    return np.asarray(Image.open(path).convert(mode))


def grey_pixels(h=24, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def write_image(path, pixels, **save_kwargs):
    """Saves `pixels` (PIL infers the mode from the array) and returns the path."""
    Image.fromarray(pixels).save(path, **save_kwargs)
    return path


def write_cmyk_jpeg(path, rgb):
    """`rgb` uint8 `[h, w, 3]` saved as a CMYK JPEG (as print workflows and some scanners write)."""
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    return path


def write_dicom(
    path,
    pixels,
    *,
    photometric="MONOCHROME2",
    bits_stored=12,
    slope=None,
    intercept=None,
    window=None,
    voi_function=None,
    voi_lut=None,
):
    """A single-frame grey DICOM file with optional rescale, window and VOI LUT tags.

    `voi_lut` is `(first_mapped, bits, table)`, stored as a one-item VOI LUT Sequence.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, bits, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first, bits]
        item.add_new("LUTData", "US", [int(v) for v in table])
        ds.VOILUTSequence = [item]
    dtype = np.uint16 if bits_stored > 8 else np.uint8
    ds.PixelData = pixels.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp12(h=16, w=16) -> np.ndarray:
    """A 12-bit ramp 0..4095 along the rows."""
    return np.linspace(0, 4095, h * w).round().astype(np.uint16).reshape(h, w)


def write_class_folder(folder, n, size=(32, 32), seed=0, prefix="img", suffix=".png"):
    """`n` small grey images in `folder`, named `{prefix}{i}...`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"{prefix}{i:03d}{suffix}", grey_pixels(*size, seed=seed + i))


def write_layout(root, counts, *, patients=False, size=(32, 32)):
    """`root/<split>/<class>/` folders; counts = {split: {class: n}}.

    With patients, files are named like the chest X-ray release, two images per
    patient (`person{N}_bacteria_{i}.jpeg`), patient numbers unique across splits.
    """
    patient = 0
    for split, per_class in counts.items():
        for class_name, n in per_class.items():
            folder = root / split / class_name if split else root / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if patients:
                    name = f"person{patient + i // 2}_bacteria_{i}.png"
                else:
                    name = f"{class_name.lower()}_{i:03d}.png"
                write_image(folder / name, grey_pixels(*size, seed=patient + i))
            patient += n
    return root


def write_folder(root, n_per_class=24, size=40, splits=("train", "val", "test")):
    """A chest-X-ray-layout folder whose two classes differ in brightness (learnable)."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, (name, base) in enumerate((("NORMAL", 60), ("PNEUMONIA", 170))):
            folder = root / split / name
            folder.mkdir(parents=True)
            count = n_per_class if split == "train" else n_per_class // 2
            for i in range(count):
                pixels = np.clip(rng.normal(base, 30, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"person{label}{i:03d}_img_{i}.png")
    return root


# --- manifests in the public formats (tiny copies: same columns, made-up rows) -------------------


def _bright(positive: bool, seed: int, size=16) -> np.ndarray:
    """A grey image, brighter for the positive class (learnable in a step or two)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(170 if positive else 60, 25, (size, size)), 0, 255).astype(np.uint8)


def write_rsna(root, n_patients=40):
    """RSNA Pneumonia Detection: `stage_2_train_labels.csv` (patientId, x, y, width, height,
    Target; a positive has a row per box) beside `stage_2_train_images/<patientId>.dcm`."""
    images = root / "stage_2_train_images"
    images.mkdir(parents=True)
    lines = ["patientId,x,y,width,height,Target"]
    for i in range(n_patients):
        pid = f"{i:08x}-14fd-4e49-80ba-{i:012x}"
        positive = i % 3 == 0
        write_dicom(images / f"{pid}.dcm", _bright(positive, i), bits_stored=8)
        boxes = ["264.0,152.0,213.0,379.0", "562.0,152.0,256.0,453.0"] if positive else [",,,"]
        lines += [f"{pid},{box},{int(positive)}" for box in boxes]
    (root / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n")
    return root / "stage_2_train_labels.csv"


CHESTXRAY14_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def write_chestxray14(root, n_patients=30, per_patient=2):
    """NIH ChestX-ray14: `Data_Entry_2017.csv` (its header as published: unquoted brackets,
    a trailing comma) and PNGs in `images_001/images/`."""
    images = root / "images_001" / "images"
    images.mkdir(parents=True)
    lines = [CHESTXRAY14_HEADER]
    findings = ("No Finding", "Pneumonia", "Effusion", "Effusion|Pneumonia", "Infiltration")
    for patient in range(1, n_patients + 1):
        for k in range(per_patient):
            name = f"{patient:08d}_{k:03d}.png"
            finding = findings[(patient + k) % len(findings)]
            write_image(images / name, _bright("Pneumonia" in finding, patient * 10 + k))
            lines.append(f"{name},{finding},{k},{patient},58,M,PA,2682,2749,0.143,0.143,")
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return root / "Data_Entry_2017.csv"


CHEXPERT_FINDINGS = (
    "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,"
    "Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)


def write_chexpert(root, n_patients=40):
    """CheXpert-v1.0-small: `train.csv` (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 findings
    of 1.0, 0.0, -1.0 or empty) with paths relative to the folder above it, JPEGs."""
    top = root / "CheXpert-v1.0-small"
    lines = [f"Path,Sex,Age,Frontal/Lateral,AP/PA,{CHEXPERT_FINDINGS}"]
    pneumonia = ("1.0", "0.0", "", "-1.0", "0.0")
    for i in range(1, n_patients + 1):
        rel = f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg"
        value = pneumonia[i % len(pneumonia)]
        (root / rel).parent.mkdir(parents=True)
        write_image(root / rel, _bright(value == "1.0", i), quality=95)
        cells = [""] * 14
        cells[7] = value
        cells[0] = "1.0" if value in ("", "0.0") else ""
        lines.append(f"{rel},Female,68,Frontal,AP," + ",".join(cells))
    (top / "train.csv").write_text("\n".join(lines) + "\n")
    return top / "train.csv"


# --- frontal chest films as cartoons (the lung estimate and the shortcut audit) ---

# The phantom's lungs: (centre row, centre column, half-height, half-width), fractions.
LUNGS = ((0.5, 0.3, 0.32, 0.13), (0.5, 0.7, 0.32, 0.13))


def phantom(h: int, w: int | None = None, scale: float = 255.0) -> tuple[np.ndarray, np.ndarray]:
    """A frontal film as a cartoon, and its true lung labels (1 image left, 2 right).

    Dark outside air, a brighter body (an ellipse), two dark lung ellipses with
    bright ribs across them, a bright spine between.
    """
    w = w or h
    y, x = np.mgrid[0:h, 0:w]
    y, x = (y + 0.5) / h, (x + 0.5) / w
    image = np.full((h, w), 0.03)
    image[((y - 0.5) / 0.52) ** 2 + ((x - 0.5) / 0.45) ** 2 <= 1] = 0.7
    labels = np.zeros((h, w), np.uint8)
    for value, (cy, cx, ay, ax) in enumerate(LUNGS, start=1):
        labels[((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1] = value
    ribs = (np.sin(y * 2 * np.pi * 9) > 0.8) & (labels > 0)
    image[labels > 0] = 0.3
    image[ribs] = 0.45
    image[np.abs(x - 0.5) < 0.05] = 0.9
    return (image * scale).astype(np.float32), labels


def shortcut_films(n: int, rng, *, size: int = 48, marker: bool = True):
    """Cartoon films with a planted shortcut, and their labels (half 1, "pneumonia").

    Every film is a `phantom` with its own brightness, a slight shift and noise;
    a pneumonia film has three bright blobs (consolidation) inside its lungs, and,
    where `marker`, a white square burnt into its top-left corner: outside the
    lungs, in the border bands, and a far easier cue than the blobs.
    """
    from scipy import ndimage as ndi

    base, lungs = phantom(size)
    labels = np.arange(n) % 2
    films = np.empty((n, size, size), np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    radius = size / 14
    # Blob centres a radius and more inside a lung: the blobs lie in the lung field.
    inside = np.argwhere(ndi.binary_erosion(lungs > 0, iterations=max(1, int(radius))))
    for i, label in enumerate(labels):
        film = base * rng.uniform(0.8, 1.1) + rng.normal(0, 6, base.shape)
        if label:
            for cy, cx in inside[rng.choice(len(inside), 3, replace=False)]:
                film[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] += 90
        film = np.roll(film, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        if label and marker:
            side = max(3, size // 8)
            film[1 : 1 + side, 1 : 1 + side] = 255
        films[i] = np.clip(film, 0, 255).astype(np.uint8)
    return films, labels


def write_shortcut_npz(path, *, counts=(240, 80, 80), size: int = 48, seed: int = 0):
    """A MedMNIST-format .npz of `shortcut_films` (train, val, test), named like
    PneumoniaMNIST so that its classes read normal and pneumonia; returns the path."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        films, labels = shortcut_films(n, rng, size=size)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = films, labels[:, None]
    np.savez(path, **arrays)
    return path
