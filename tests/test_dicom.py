"""The ``dicom`` data source and ``read_dicom``: small DICOM files written with pydicom."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import tiny_raw
from PIL import Image
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from mtlkit import DataError, load_config, run
from mtlkit.plugins.dicom import DicomOptions, dicom_source, is_dicom, read_dicom
from mtlkit.plugins.synthetic.phantoms import PhantomSettings, generate_phantoms


def write_dicom(
    path,
    pixels,
    photometric="MONOCHROME2",
    *,
    bits_stored=None,
    multi_frame=False,
    patient="P1",
    syntax=ExplicitVRLittleEndian,
    pixel_data=None,
    image=True,
):
    """A DICOM file of ``pixels`` ((rows, cols[, 3]) or (frames, rows, cols)); returns path."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    sop_class = UltrasoundMultiFrameImageStorage if multi_frame else UltrasoundImageStorage
    sop_class = sop_class if image else BasicTextSRStorage
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    if patient is not None:
        ds.PatientID = patient
    if image:
        frame_shape = pixels.shape[1:] if multi_frame else pixels.shape
        ds.Rows, ds.Columns = frame_shape[:2]
        ds.SamplesPerPixel = 3 if len(frame_shape) == 3 else 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if ds.SamplesPerPixel == 3:
            ds.PlanarConfiguration = 0
        if multi_frame:
            ds.NumberOfFrames = pixels.shape[0]
        if pixel_data is not False:
            ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
            if pixel_data is not None:
                ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def gray(size=(6, 8), value=0):
    return np.full(size, value, dtype=np.uint8)


# --- read_dicom ---------------------------------------------------------------------------


def test_monochrome2_8_bit_is_read_as_is(tmp_path):
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = write_dicom(tmp_path / "a.dcm", pixels)
    out = read_dicom(path)
    assert out.dtype == np.uint8 and out.shape == (6, 8)
    assert np.array_equal(out, pixels)


def test_12_bit_values_are_scaled_by_bits_stored_not_clipped(tmp_path):
    pixels = np.array([[0, 2048, 4095, 1000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    assert read_dicom(path).tolist() == [[0, 128, 255, 62]]  # round(v / 4095 * 255)


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 255, 100]], dtype=np.uint8)
    path = write_dicom(tmp_path / "a.dcm", pixels, "MONOCHROME1")
    assert read_dicom(path).tolist() == [[255, 0, 155]]


def random_rgb(seed=0, size=(8, 10)):
    # Moderate saturation: YCbCr round trips then never clip, so luma is exact to rounding.
    return np.random.default_rng(seed).integers(40, 216, (*size, 3), dtype=np.uint8)


def pillow_luma(rgb):
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=int)


def to_ybr_full(rgb):
    """RGB -> YCbCr as in ITU-T T.871 (JPEG full range), written independently of pydicom."""
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def test_rgb_becomes_pillow_luma(tmp_path):
    rgb = random_rgb()
    path = write_dicom(tmp_path / "a.dcm", rgb, "RGB")
    out = read_dicom(path).astype(int)
    assert out.shape == (8, 10)
    assert np.abs(out - pillow_luma(rgb)).max() <= 1


def test_ybr_full_is_converted_to_rgb_then_luma(tmp_path):
    rgb = random_rgb(1)
    path = write_dicom(tmp_path / "a.dcm", to_ybr_full(rgb), "YBR_FULL")
    out = read_dicom(path).astype(int)
    assert np.abs(out - pillow_luma(rgb)).max() <= 2
    assert not np.array_equal(out, to_ybr_full(rgb)[..., 1])  # not a chroma plane by mistake


def test_ybr_full_422_with_subsampled_chroma(tmp_path):
    rgb = random_rgb(2)
    ybr = to_ybr_full(rgb).astype(int)
    # Native 4:2:2 layout: Y0 Y1 Cb Cr for each horizontal pair, chroma averaged.
    pairs = ybr.reshape(8, 5, 2, 3)
    chroma = pairs[..., 1:].mean(axis=2).round()
    packed = np.stack(
        [pairs[..., 0, 0], pairs[..., 1, 0], chroma[..., 0], chroma[..., 1]], axis=-1
    ).astype(np.uint8)
    path = write_dicom(
        tmp_path / "a.dcm", ybr.astype(np.uint8), "YBR_FULL_422", pixel_data=packed.tobytes()
    )
    out = read_dicom(path).astype(int)
    # Luma is Y itself, whatever the chroma; only rounding and clipping differ.
    assert np.abs(out - pillow_luma(rgb)).max() <= 2


def test_ybr_left_by_the_decoder_is_converted_here(tmp_path, monkeypatch):
    """A decoder that returns YBR_FULL untouched (as raw=True does) still gives luma."""
    from pydicom.pixels.decoders.base import Decoder

    original = Decoder.as_array
    monkeypatch.setattr(Decoder, "as_array", lambda self, src, **kw: original(self, src, raw=True))
    rgb = random_rgb(3)
    path = write_dicom(tmp_path / "a.dcm", to_ybr_full(rgb), "YBR_FULL")
    assert np.abs(read_dicom(path).astype(int) - pillow_luma(rgb)).max() <= 2


def jpeg_bytes(rgb):
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=95, subsampling=1)  # 4:2:2
    return buffer.getvalue()


def test_jpeg_baseline_cine_decodes_the_chosen_frame(tmp_path):
    """Most ultrasound DICOM is JPEG baseline YBR_FULL_422; compare with Pillow's decoding."""
    frames = [random_rgb(4, (16, 16)), random_rgb(5, (16, 16))]
    encoded = [jpeg_bytes(f) for f in frames]
    path = write_dicom(
        tmp_path / "cine.dcm",
        np.stack(frames),
        "YBR_FULL_422",
        multi_frame=True,
        syntax=JPEGBaseline8Bit,
        pixel_data=encapsulate(encoded),
    )
    for index, data in enumerate(encoded):
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=int)
        assert np.abs(read_dicom(path, frame=index).astype(int) - expected).max() <= 2
    assert not np.array_equal(read_dicom(path, frame=0), read_dicom(path, frame=1))


def test_palette_color_uses_the_lookup_table(tmp_path):
    indices = np.array([[0, 100, 255]], dtype=np.uint8)
    path = tmp_path / "p.dcm"
    write_dicom(path, indices, "PALETTE COLOR")
    import pydicom

    ds = pydicom.dcmread(path)
    ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()  # 16-bit entries, red only
    zero = np.zeros(256, dtype=np.uint16).tobytes()
    for colour, data in (("Red", ramp), ("Green", zero), ("Blue", zero)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
    ds.save_as(path, enforce_file_format=True)
    assert read_dicom(path).tolist() == [[0, round(100 * 0.299), round(255 * 0.299)]]


def test_multi_frame_needs_a_frame_and_checks_its_range(tmp_path):
    frames = np.stack([gray(value=v) for v in (10, 20, 30)])
    path = write_dicom(tmp_path / "cine.dcm", frames, multi_frame=True)
    with pytest.raises(DataError, match=r"cine\.dcm: 3 frames; choose one"):
        read_dicom(path)
    assert read_dicom(path, frame=0)[0, 0] == 10
    assert read_dicom(path, frame=2)[0, 0] == 30
    with pytest.raises(DataError, match="frame 3 does not exist"):
        read_dicom(path, frame=3)
    single = write_dicom(tmp_path / "one.dcm", gray(value=7))
    assert read_dicom(single, frame=0)[0, 0] == 7
    with pytest.raises(DataError, match="frame 1 does not exist"):
        read_dicom(single, frame=1)


def test_is_dicom_by_magic_or_name(tmp_path):
    no_extension = write_dicom(tmp_path / "IM0001", gray())
    (tmp_path / "note.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert is_dicom(no_extension) and is_dicom(tmp_path / "empty.dcm")
    assert not is_dicom(tmp_path / "note.txt") and not is_dicom(tmp_path / "missing")


def test_bad_files_are_data_errors_naming_the_file(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"photo\.png: not a DICOM file"):
        read_dicom(tmp_path / "photo.png")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 50)
    with pytest.raises(DataError, match=r"junk\.dcm"):
        read_dicom(tmp_path / "junk.dcm")
    good = write_dicom(tmp_path / "good.dcm", gray((64, 64), 9)).read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(good[:-1000])
    with pytest.raises(DataError, match=r"truncated\.dcm"):
        read_dicom(tmp_path / "truncated.dcm")
    no_pixels = write_dicom(tmp_path / "nopix.dcm", gray(), pixel_data=False)
    with pytest.raises(DataError, match=r"nopix\.dcm: no image; it holds no pixel data"):
        read_dicom(no_pixels)


def test_compressed_syntax_without_decoder_names_the_packages(tmp_path):
    garbage = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    path = write_dicom(tmp_path / "ls.dcm", gray(), syntax=JPEGLSLossless, pixel_data=garbage)
    with pytest.raises(DataError) as info:
        read_dicom(path)
    message = str(info.value)
    assert "ls.dcm" in message and "JPEG-LS Lossless" in message
    assert "not installed" in message and "pylibjpeg" in message
    video = write_dicom(tmp_path / "mp4.dcm", gray(), syntax=MPEG4HP41, pixel_data=garbage)
    with pytest.raises(DataError, match=r"mp4\.dcm: transfer syntax MPEG-4.* is video"):
        read_dicom(video)


def test_undecodable_compressed_data_is_a_data_error(tmp_path):
    garbage = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    path = write_dicom(tmp_path / "j2k.dcm", gray(), syntax=JPEG2000Lossless, pixel_data=garbage)
    with pytest.raises(DataError, match=r"j2k\.dcm: cannot decode frame 0 \(JPEG 2000"):
        read_dicom(path)


# --- the dicom source ---------------------------------------------------------------------


def source(root, **options):
    return dicom_source(DicomOptions(root=str(root), **options))


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lists_images_by_magic_with_patient_ids(tmp_path):
    root = tmp_path / "export"
    write_dicom(root / "study1" / "IM0001", gray(value=1), patient="A")
    write_dicom(root / "study1" / "IM0002", gray(value=2), patient="A")
    write_dicom(root / "study2" / "x.dcm", gray(value=3), patient=None)
    write_dicom(root / "DICOMDIR", gray(), image=False)  # a non-image object: passed over
    (root / "readme.txt").write_text("not dicom")
    sample_set = source(root)
    by_id = {s.image_id: s for s in sample_set.samples}
    assert sorted(by_id) == ["study1/IM0001", "study1/IM0002", "study2/x.dcm"]
    assert by_id["study1/IM0001"].patient_id == "A" == by_id["study1/IM0002"].patient_id
    assert by_id["study2/x.dcm"].patient_id == "study2/x.dcm"  # no PatientID: its own patient
    assert by_id["study1/IM0002"].image()[0, 0] == 2
    assert by_id["study1/IM0002"].files == (root / "study1" / "IM0002",)
    assert "1 non-image DICOM object(s) ignored" in sample_set.description


def test_listing_does_not_decode_pixel_data(tmp_path, monkeypatch):
    write_dicom(tmp_path / "a.dcm", gray())
    import pydicom.pixels

    def refuse(*args, **kwargs):
        raise AssertionError("pixel data decoded while listing")

    monkeypatch.setattr(pydicom.pixels.decoders.base.Decoder, "as_array", refuse)
    assert len(source(tmp_path)) == 1


def cine(root, name="cine.dcm", patient="C"):
    frames = np.stack([gray(value=v) for v in (10, 20, 30, 40)])
    return write_dicom(root / name, frames, multi_frame=True, patient=patient)


@pytest.mark.parametrize(
    ("frames", "ids", "values"),
    [
        ("first", ["cine.dcm"], [10]),
        ("middle", ["cine.dcm"], [30]),
        ("all", ["cine.dcm#0", "cine.dcm#1", "cine.dcm#2", "cine.dcm#3"], [10, 20, 30, 40]),
    ],
)
def test_frames_option(tmp_path, frames, ids, values):
    cine(tmp_path)
    samples = source(tmp_path, frames=frames).samples
    assert [s.image_id for s in samples] == ids
    assert [int(s.image()[0, 0]) for s in samples] == values
    assert {s.patient_id for s in samples} == {"C"}  # frames never straddle a split
    # The RoI cache is keyed by file content, not frame: cine frames must stay out of it.
    assert all(s.files == () for s in samples)


def test_labels_join_and_override_patient(tmp_path):
    write_dicom(tmp_path / "a.dcm", gray(), patient="A")
    write_dicom(tmp_path / "b.dcm", gray(), patient="B")
    cine(tmp_path)
    labels = write_csv(
        tmp_path / "labels.csv",
        ["image", "patient_id", "frame", "bm", "alnm_count"],
        [
            ["a.dcm", "", "", "benign", 0],
            ["b.dcm", "X9", "", "malignant", 2],
            ["cine.dcm", "", 1, 1, ""],
        ],
    )
    sample_set = source(tmp_path, labels=str(labels), frames="all")
    by_id = {s.image_id: s for s in sample_set.samples}
    assert sorted(by_id) == ["a.dcm", "b.dcm", "cine.dcm"]  # the frame column picks one frame
    assert by_id["a.dcm"].patient_id == "A" and by_id["b.dcm"].patient_id == "X9"
    assert by_id["b.dcm"].labels == {"bm": "malignant", "alnm_count": "2"}
    assert by_id["cine.dcm"].image()[0, 0] == 20
    assert by_id["b.dcm"].origin == "labels.csv row 3"
    assert list(sample_set.columns) == ["bm", "alnm_count"]


def test_every_bad_row_and_unlabelled_file_is_listed_at_once(tmp_path):
    write_dicom(tmp_path / "a.dcm", gray())
    write_dicom(tmp_path / "sub" / "b.dcm", gray())
    write_dicom(tmp_path / "c.dcm", gray())
    write_dicom(tmp_path / "sr.dcm", gray(), image=False)
    (tmp_path / "photo.png").write_bytes(b"png")
    labels = write_csv(
        tmp_path / "labels.csv",
        ["image", "bm"],
        [
            ["a.dcm", "benign"],
            ["missing.dcm", "benign"],
            ["a.dcm", "malignant"],
            ["photo.png", 1],
            ["sr.dcm", 0],
            ["../outside.dcm", 0],
        ],
    )
    with pytest.raises(DataError) as info:
        source(tmp_path, labels=str(labels))
    message = str(info.value)
    assert "7 problem(s)" in message
    assert "labels.csv row 3: file not found under the root folder: missing.dcm" in message
    assert "labels.csv row 4: a.dcm is already listed in row 2" in message
    assert "labels.csv row 5: photo.png is not a DICOM file" in message
    assert "row 6: sr.dcm is a DICOM Basic Text SR Storage without an image" in message
    assert "labels.csv row 7: image path is empty or leaves" in message
    assert "sub/b.dcm: no row in labels.csv" in message and "c.dcm: no row in" in message
    # With unlabelled: skip only the rows' own problems remain.
    labels = write_csv(tmp_path / "ok.csv", ["image", "bm"], [["a.dcm", 0], ["sub\\b.dcm", 1]])
    sample_set = source(tmp_path, labels=str(labels), unlabelled="skip")
    assert [s.image_id for s in sample_set.samples] == ["a.dcm", "sub/b.dcm"]
    assert "1 unlabelled skipped" in sample_set.description


def test_unreadable_and_undecodable_files_are_listed_while_scanning(tmp_path):
    write_dicom(tmp_path / "good.dcm", gray())
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 300)
    head = write_dicom(tmp_path / "cut", gray((64, 64))).read_bytes()[:200]
    (tmp_path / "cut").write_bytes(head)
    garbage = encapsulate([b"x"])
    write_dicom(tmp_path / "ls.dcm", gray(), syntax=JPEGLSLossless, pixel_data=garbage)
    with pytest.raises(DataError) as info:
        source(tmp_path)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "junk.dcm: not a readable DICOM" in message
    assert "cut: Ultrasound Image Storage without Rows/Columns (truncated" in message
    assert "ls.dcm: transfer syntax JPEG-LS Lossless" in message and "not installed" in message


def test_boxes_and_masks(tmp_path):
    write_dicom(tmp_path / "a.dcm", gray((6, 8)))
    write_dicom(tmp_path / "b.dcm", gray((6, 8)))
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:4, 3:6] = 1
    write_dicom(tmp_path / "a_mask.dcm", mask)
    Image.fromarray(mask * 255).save(tmp_path / "b_mask.png")
    header = ["image", "mask", "x0", "y0", "x1", "y1", "bm"]
    labels = write_csv(
        tmp_path / "l.csv",
        header,
        [["a.dcm", "a_mask.dcm", 1, 1, 5, 5, 0], ["b.dcm", "b_mask.png", 0, 0, 8, 6, 1]],
    )
    samples = source(tmp_path, labels=str(labels), unlabelled="skip").samples
    a, b = samples
    assert a.box == (1, 1, 5, 5) and b.box == (0, 0, 8, 6)
    assert a.mask().sum() == 6 and np.array_equal(a.mask(), b.mask())
    assert a.files == (tmp_path / "a.dcm", tmp_path / "a_mask.dcm")
    assert "mask" not in a.labels and "x0" not in a.labels
    bad = write_csv(
        tmp_path / "m.csv",
        header,
        [["a.dcm", "", 0, 0, 9, 6, 0], ["b.dcm", "nope.png", 0, 0, 1, 1, 1]],
    )
    with pytest.raises(DataError) as info:
        source(tmp_path, labels=str(bad), unlabelled="skip")
    assert "row 2: box (0, 0, 9, 6) leaves the 8x6 image" in str(info.value)
    assert "row 3: mask file not found: nope.png" in str(info.value)


def test_column_options_need_a_labels_csv():
    with pytest.raises(ValidationError, match="patient_column only apply with a labels CSV"):
        DicomOptions(root=".", patient_column="case")
    with pytest.raises(ValidationError):
        DicomOptions(root=".", frames="last")


def test_a_run_on_dicom_files_trains_every_task(tmp_path):
    """Phantoms written as extension-less DICOM files, labels and boxes from a CSV."""
    root = tmp_path / "dicom"
    phantoms = generate_phantoms(PhantomSettings(patients=24, image_size=32), seed=0)
    rows = []
    for index, phantom in enumerate(phantoms):
        name = f"{phantom.patient_id}/IM{index:04d}"
        write_dicom(root / name, phantom.pixels.astype(np.uint8), patient=phantom.patient_id)
        oracle = [phantom.oracle[k] for k in ("bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4")]
        count = "" if phantom.alnm_count is None else phantom.alnm_count
        rows.append([name, *phantom.box, phantom.bm, count, *oracle])
    oracle_columns = ["oracle_bm", "oracle_alnm", "oracle_alnm_ge2", "oracle_alnm_ge3"]
    labels = write_csv(
        tmp_path / "labels.csv",
        ["image", "x0", "y0", "x1", "y1", "bm", "alnm_count", *oracle_columns, "oracle_alnm_ge4"],
        rows,
    )
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "dicom", "root": str(root), "labels": str(labels)}
    run(load_config(raw), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tasks = metrics["sets"]["test"]["tasks"]
    assert set(tasks) == {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}
    assert tasks["bm"]["n"] > 0 and tasks["bm"]["reference_auc"] is not None
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert "p0000/IM0000" in json.dumps(splits)


def test_a_manifest_may_list_dicom_files(tmp_path):
    from mtlkit.plugins.manifest import ManifestOptions, manifest_source

    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    write_dicom(tmp_path / "scans" / "one", pixels)  # no extension: found by its marker
    manifest = write_csv(tmp_path / "m.csv", ["image", "bm"], [["scans/one", "benign"]])
    (sample,) = manifest_source(ManifestOptions(path=str(manifest))).samples
    assert np.array_equal(sample.image(), pixels)
