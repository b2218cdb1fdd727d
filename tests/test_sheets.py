"""The user's sheets and config as the campaign of issue 23 attacked them: anything that is
not a small regular UTF-8 table is refused with the file (and line), without reading what
cannot be read, without repeating a file's text, and without guessing."""

from __future__ import annotations

import os
import threading

import pytest

from dualpet.sheets import SheetError, load_yaml_strict, read_tsv


def test_a_named_pipe_or_a_device_is_refused_without_reading(tmp_path):
    """A FIFO as the studies path hung the parse; /dev/zero gave a MemoryError."""
    fifo = tmp_path / "studies.tsv"
    os.mkfifo(fifo)
    done = {}

    def read():
        try:
            read_tsv(fifo, what="studies sheet")
        except SheetError as exc:
            done["error"] = str(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5.0)  # a blocking open would still be waiting
    assert not worker.is_alive() and "not a regular file" in done["error"]
    with pytest.raises(SheetError, match="not a regular file"):
        read_tsv("/dev/zero", what="clinical sheet")


def test_a_file_that_is_not_a_sheet_is_not_repeated_in_the_error(tmp_path):
    """Naming a system file as the clinical sheet echoed its first line."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    with pytest.raises(SheetError) as err:
        read_tsv(secret, what="clinical sheet", required=("patient",))
    assert "root" not in str(err.value).replace(
        str(tmp_path), ""
    ) and "not a header of tab-separated column names" in str(err.value)
    sheet = tmp_path / "c.tsv"
    sheet.write_text("patinet\tcxcr4_ihc\nP1\t2\n")  # a real header with a typo: its names help
    with pytest.raises(SheetError, match=r"found \['patinet', 'cxcr4_ihc'\]"):
        read_tsv(sheet, what="clinical sheet", required=("patient",))


def test_a_quote_that_swallows_the_next_rows_is_refused_with_its_line(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text('patient\ttracer\tdicom_dir\nP1\tfdg\t"d1\nP1\tpentixafor\td2\nP2\tfdg\td3"\n')
    with pytest.raises(SheetError, match=r"s.tsv, line 2: a double quote"):
        read_tsv(sheet, what="studies sheet")
    sheet.write_text('patient\ttracer\tdicom_dir\nP1\tfdg\t"d 1"\nP1\tpentixafor\td2\n')  # a closed quote is fine
    assert read_tsv(sheet, what="studies sheet")["dicom_dir"].tolist() == ["d 1", "d2"]


def test_a_config_key_given_twice_is_refused(tmp_path):
    """Duplicate YAML keys silently swapped the reference and index tracers (last wins)."""
    config = tmp_path / "config.yaml"
    config.write_text("studies: s.tsv\nreference_tracer: fdg\nindex_tracer: pentixafor\nreference_tracer: pentixafor\n")
    with pytest.raises(SheetError, match="line 4: key 'reference_tracer' given twice \\(first on line 2\\)"):
        load_yaml_strict(config)
    config.write_text(
        "studies: s.tsv\ndetection:\n  method: local\nbackground:\n  method: liver\n"
    )  # same key, other maps
    assert load_yaml_strict(config)["background"]["method"] == "liver"


def test_sheet_mistakes_get_one_line_each_with_the_fix(tmp_path):
    """Issue 24: a misspelt optional column names the closest known one; spaces instead of
    tabs and extra fields are named by line; trailing empty fields (spreadsheet exports)
    and omitted trailing fields are fine."""
    from dualpet.sheets import check_columns, check_paths

    sheet = tmp_path / "s.tsv"
    sheet.write_text("patient\ttracer\tdicom_dir\tbackgorund_lps\nP1\tfdg\td\t\n")
    with pytest.raises(
        SheetError, match=r"line 1: unknown column 'backgorund_lps' \(did you mean 'background_lps'\?\)"
    ):
        check_columns(
            read_tsv(sheet, what="studies sheet"),
            ["patient", "tracer", "dicom_dir", "background_lps"],
            what="studies sheet",
            path=sheet,
        )
    sheet.write_text("patient\ttracer\tdicom_dir\nP1\tfdg\td\nP1 pentixafor d\n")
    with pytest.raises(SheetError, match=r"line 3: 1 field where the header has 3: separate the columns by tabs"):
        read_tsv(sheet, what="studies sheet")
    sheet.write_text("patient\ttracer\tdicom_dir\nP1\tfdg\td\tx\n")
    with pytest.raises(SheetError, match=r"line 2: 4 fields, the header has 3"):
        read_tsv(sheet, what="studies sheet")
    sheet.write_text("patient\ttracer\tdicom_dir\tpet_series\nP1\tfdg\td\t\t\t\nP1\tpentixafor\td\n")
    rows = read_tsv(sheet, what="studies sheet")
    assert rows["pet_series"].tolist() == ["", ""] and rows["_line"].tolist() == [2, 3]
    (tmp_path / "d").mkdir()
    rows["dicom_dir"] = [str(tmp_path / "d"), str(tmp_path / "Richter^Frank")]
    rows["lesion_mask"] = [str(tmp_path / "nowhere.nii.gz"), ""]
    with pytest.raises(SheetError) as err:
        check_paths(rows, ("dicom_dir", "lesion_mask"), what="studies sheet", path=sheet)
    assert str(err.value).splitlines() == [
        f"studies sheet {sheet}, line 2, column lesion_mask: the file does not exist or is not a regular file; correct the path",
        f"studies sheet {sheet}, line 3, column dicom_dir: the folder does not exist; correct the path (relative to the "
        "sheet's folder)",
    ]
