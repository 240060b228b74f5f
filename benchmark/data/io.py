"""Decoding of image, mask and volume files into numpy arrays, with errors that name the file.

Two kinds of access: ``probe_*`` reads headers only (cheap, used to validate every file of a dataset) and
``read_*`` decodes pixels (used only for the images a run actually needs). ``max_value`` is the bit-depth maximum
needed by ``intensity=fixed``; it is None where the file's dtype gives no such bound (float, signed data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medsynbench.benchmark.data.errors import DataError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
DICOM_SUFFIXES = (".dcm", ".dicom", "")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
METAIMAGE_SUFFIXES = (".mhd", ".mha")


def printable(path) -> str:
    """A path as text that can always be printed and stored: bytes that are not UTF-8 (a file name written on
    another system) appear as backslash escapes (``caf\\xe9.png``) instead of crashing a print or a JSON write."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def full_suffix(path: Path) -> str:
    """Extension including the double ``.nii.gz``."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def stem(path: Path) -> str:
    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


@dataclass
class Raw:
    """A decoded 2D image: [H, W] or [H, W, C] array and its bit-depth maximum (None if unknown)."""

    array: np.ndarray
    max_value: float | None
    mode: str = ""                    # how it was stored, e.g. "RGB", "P", "I;16", "DICOM uint16", "float32"
    notes: tuple[str, ...] = ()       # conversions made while decoding, e.g. "alpha channel dropped"


def dtype_max(dtype: np.dtype) -> float | None:
    """Bit-depth max of unsigned integer data; None for signed/float data where no such bound exists."""
    if dtype == np.bool_:
        return 1.0
    if np.issubdtype(dtype, np.unsignedinteger):
        return float(np.iinfo(dtype).max)
    return None


# ----------------------------------------------------------------------------------------------- 2D files
def _open_pil(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def _load(im: Image.Image, path: Path) -> Image.Image:
    try:
        im.load()  # full decode: raises on truncated / corrupt data
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image, file truncated or corrupt ({e})") from None
    return im


def _pil_array(im: Image.Image) -> Raw:
    mode = im.mode
    if mode in ("1", "L", "RGB", "RGBA", "LA", "I;16", "I;16B", "I;16L"):
        notes = ("1-bit -> 8-bit (0/255)",) if mode == "1" else ()
        if mode == "1":
            im = im.convert("L")
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        if arr.ndim == 3 and arr.shape[-1] in (2, 4):
            arr = arr[..., :-1]  # drop alpha
            notes += (f"alpha channel dropped ({mode})",)
        return Raw(arr, dtype_max(arr.dtype), mode, notes)
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(im.convert("RGB"))
        return Raw(arr, 255.0, mode, (f"{mode} -> RGB",))
    if mode == "I":  # 32-bit signed int: 16-bit PNGs on some Pillow builds; bound it by the values present
        arr = np.asarray(im).astype(np.int64)
        if arr.min() >= 0 and arr.max() <= 65535:
            return Raw(arr.astype(np.uint16), 65535.0, mode)
        return Raw(arr.astype(np.float32), None, mode)
    if mode == "F":
        return Raw(np.asarray(im, dtype=np.float32), None, mode)
    raise DataError(f"unsupported Pillow image mode {mode!r}")


def _dicom(path: Path, *, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable DICOM file ({e})") from None


def read_dicom(path: Path) -> Raw:
    """Stored pixel values (no modality LUT); MONOCHROME1 inverted so that bright = high signal."""
    ds = _dicom(path, pixels=True)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises several types for missing/short pixel data or missing handlers
        raise DataError(f"{path}: cannot decode DICOM pixel data, file truncated or unsupported ({e})") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames) is not supported; "
                        "export one 2D image per file")
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    bits = int(getattr(ds, "BitsStored", arr.dtype.itemsize * 8))
    max_value = None if signed else float(2 ** bits - 1)
    notes = ()
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        top = max_value if max_value is not None else float(arr.max())
        arr = (top - arr.astype(np.float64)).astype(arr.dtype if max_value is not None else np.float32)
        notes = ("DICOM MONOCHROME1 inverted (bright = high signal)",)
    return Raw(np.asarray(arr), max_value, f"DICOM {getattr(ds, 'PhotometricInterpretation', '')} {arr.dtype}".strip(),
               notes)


def probe_size(path: Path) -> tuple[int, int]:
    """(H, W) of a 2D image file from its header, without decoding pixels."""
    if full_suffix(path) in PIL_SUFFIXES:
        with _open_pil(path) as im:
            w, h = im.size
        return h, w
    ds = _dicom(path, pixels=False)
    try:
        return int(ds.Rows), int(ds.Columns)
    except AttributeError:
        raise DataError(f"{path}: DICOM file has no Rows/Columns (no image in it)") from None


def read_2d(path: Path) -> Raw:
    """Decode a 2D image file (Pillow formats or DICOM)."""
    if full_suffix(path) in PIL_SUFFIXES:
        with _open_pil(path) as im:
            return _pil_array(_load(im, path))
    return read_dicom(path)


def read_mask_2d(path: Path) -> np.ndarray:
    """Decode a 2D mask: [H, W] or [H, W, C]; palette images keep their indices (they are the classes)."""
    if full_suffix(path) in PIL_SUFFIXES:
        with _open_pil(path) as im:
            _load(im, path)
            return np.asarray(im) if im.mode == "P" else _pil_array(im).array
    return read_dicom(path).array


# ---------------------------------------------------------------------------------------------- volumes
def _nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise DataError(f"{path}: not a readable NIfTI volume ({e})") from None


def _squeeze3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {shape}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def probe_volume(path: Path) -> tuple[int, int, int]:
    """Voxel grid shape (i, j, k) = (x, y, z) from the header only."""
    if full_suffix(path) in NIFTI_SUFFIXES:
        return _squeeze3d(path, tuple(_nifti(path).shape))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(f"{path}: not a readable MetaImage volume ({_first_line(e)})") from None
    return _squeeze3d(path, tuple(reader.GetSize()))


def read_volume(path: Path) -> Raw:
    """Decode a volume as an [x, y, z] array (SimpleITK's [z, y, x] is transposed to match nibabel)."""
    if full_suffix(path) in NIFTI_SUFFIXES:
        img = _nifti(path)
        try:
            arr = np.asanyarray(img.dataobj)
        except Exception as e:
            raise DataError(f"{path}: cannot decode NIfTI data, file truncated or corrupt ({e})") from None
    else:
        import SimpleITK as sitk

        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T
        except RuntimeError as e:
            raise DataError(f"{path}: cannot decode MetaImage data, raw file missing or truncated "
                            f"({_first_line(e)})") from None
    arr = arr.reshape(_squeeze3d(path, arr.shape))
    return Raw(arr, dtype_max(arr.dtype), f"volume {arr.dtype}")


def volume_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice with rows along the higher remaining voxel axis (e.g. axial: rows = y, columns = x)."""
    return np.take(volume, index, axis=axis).T


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
