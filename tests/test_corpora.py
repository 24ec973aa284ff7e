"""AffectNet, MSP-IMPROV and manifest loaders on tiny trees in their exact layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from training.corpora import load_corpus
from training.corpora.affectnet import load_affectnet
from training.corpora.manifest import load_manifest
from training.corpora.msp_improv import load_msp_improv
from vfer.classes import EMOTIONS_4, EMOTIONS_6

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"


def _affectnet(root: Path, train: dict[int, int], val: dict[int, int], header_val: bool) -> None:
    lists = root / "Manually_Annotated_file_lists"
    images = root / "Manually_Annotated_Images"
    lists.mkdir(parents=True)
    for name, per_code, header in (("training", train, True), ("validation", val, header_val)):
        lines = [AFFECTNET_HEADER] if header else []
        for code, n in per_code.items():
            for i in range(n):
                rel = f"{code}{i % 3}/{name}_{code}_{i}.jpg"
                (images / rel).parent.mkdir(parents=True, exist_ok=True)
                (images / rel).write_bytes(b"jpg")
                lines.append(f'{rel},10,12,100,110,"1.0;2.0",{code},0.1,-0.2\n')
        (lists / f"{name}.csv").write_text("".join(lines))


def test_affectnet_protocol(tmp_path: Path) -> None:
    _affectnet(
        tmp_path,
        {0: 30, 1: 12, 2: 5, 3: 4, 6: 10, 7: 2, 9: 1},
        {0: 2, 1: 3, 6: 1, 8: 2},
        header_val=False,
    )
    corpus = load_affectnet(tmp_path, EMOTIONS_4, max_per_class=10, seed=3)
    train = Counter(r.label for r in corpus.split("train"))
    dev = Counter(r.label for r in corpus.split("dev"))
    assert train == {"neutral": 8, "happiness": 8, "anger": 8, "sadness": 4}
    assert dev == {"neutral": 2, "happiness": 2, "anger": 2, "sadness": 1}
    assert Counter(r.label for r in corpus.split("test")) == {
        "neutral": 2,
        "happiness": 3,
        "anger": 1,
    }
    assert (
        corpus.counts["downsampled_neutral"] == 20 and corpus.counts["downsampled_happiness"] == 2
    )
    assert corpus.counts["code_3_surprise"] == 4 and corpus.counts["code_8_none"] == 2
    r = corpus.records[0]
    assert r.box == (10, 12, 100, 110) and r.path.is_file()
    assert load_affectnet(tmp_path, EMOTIONS_4, max_per_class=10, seed=3) == corpus
    six = load_affectnet(tmp_path, EMOTIONS_6, max_per_class=10, seed=3)
    assert six.class_counts()["fear"] == 0 and "code_3_surprise" in six.counts


def test_affectnet_missing_images_are_counted(tmp_path: Path) -> None:
    _affectnet(tmp_path, {0: 5, 1: 5}, {0: 1}, header_val=True)
    next((tmp_path / "Manually_Annotated_Images").rglob("*.jpg")).unlink()
    corpus = load_affectnet(tmp_path, ("neutral", "happiness"))
    assert corpus.counts["missing_file"] == 1 and len(corpus) == 10


def _msp(root: Path) -> list[str]:
    """Evalution.txt (first lines as in the release) and videos under Video/session<N>/..."""
    speakers = [f"{g}{s:02d}" for s in range(1, 7) for g in "FM"]
    lines = [
        "UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:3.000000; V:2.200000; D:3.200000; N:3.000000;",
        "EV001: Angry; Frustrated; ; A:3.000000; V:2.000000; D:3.000000; N:3.000000;",
        "",
        "UTD-IMPROV-S01H-M01-P-FM01.avi; H; A:3.6; V:4.0; D:3.2; N:3.0;",
    ]
    stems = ["MSP-IMPROV-S01A-F01-P-FM01", "MSP-IMPROV-S01H-M01-P-FM01"]
    for spk in speakers:
        for sentence, letter, kind in (
            ("S02S", "S", "R"),
            ("S03N", "N", "T"),
            ("S04A", "X", "S"),
            ("S05H", "O", "P"),
        ):
            stem = f"MSP-IMPROV-{sentence}-{spk}-{kind}-FM01"
            lines.append(f"{stem}.avi; {letter}; A:3.0; V:3.0; D:3.0; N:3.0;")
            stems.append(stem)
    (root / "Evalution.txt").write_text("\n".join(lines) + "\n")
    for stem in stems:
        _, _, sentence, spk, kind, _ = stem.split("-")
        folder = root / "Video" / f"session{int(spk[1:])}" / sentence / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.avi").write_bytes(b"")
    (root / "Video" / "README.avi").write_bytes(b"")
    return speakers


def test_msp_improv_labels_speakers_and_split(tmp_path: Path) -> None:
    speakers = _msp(tmp_path)
    corpus = load_msp_improv(tmp_path, seed=5)
    assert corpus.counts["label_X"] == 12 and corpus.counts["label_O"] == 12
    assert corpus.counts["unrecognised_file"] == 1
    assert len(corpus) == 2 + 12 * 2
    first = {r.path.stem: r for r in corpus}["MSP-IMPROV-S01A-F01-P-FM01"]
    assert (first.label, first.subject, first.gender) == ("anger", "F01", "female")
    assert set(corpus.subjects()) == set(speakers)
    split = {r.subject: r.split for r in corpus}
    sizes = Counter(split.values())
    assert sizes == {"train": 6, "dev": 2, "test": 4}
    for name in ("dev", "test"):
        genders = Counter(s[0] for s, x in split.items() if x == name)
        assert genders["F"] == genders["M"]
    assert {r.subject: r.split for r in load_msp_improv(tmp_path, seed=5)} == split
    assert any(
        {r.subject: r.split for r in load_msp_improv(tmp_path, seed=s)} != split
        for s in range(6, 9)
    )


def test_msp_improv_without_label_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Evalution\.txt"):
        load_msp_improv(tmp_path)


def test_manifest_paths_relative_to_the_csv(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    (tmp_path / "frames").mkdir()
    (tmp_path / "still.png").write_bytes(b"")
    csv_path = tmp_path / "manifest.csv"
    csv_path.write_text(
        "path,subject,label,split\nclips/a.mp4,p1,happy,train\nframes,p2,Anger,test\n"
        f"{tmp_path / 'still.png'},p3,neutral,\nclips/a.mp4,p1,contempt,train\n"
    )
    corpus = load_manifest(csv_path, EMOTIONS_6)
    assert [(r.path, r.label, r.split) for r in corpus] == [
        (tmp_path / "clips" / "a.mp4", "happiness", "train"),
        (tmp_path / "frames", "anger", "test"),
        (tmp_path / "still.png", "neutral", None),
    ]
    assert corpus.counts == {"label_not_in_classes": 1}
    assert load_manifest(csv_path).classes == ("anger", "contempt", "happiness", "neutral")
    assert load_corpus("manifest", tmp_path, EMOTIONS_6).records == corpus.records


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("path,label\nx,anger\n", r"missing column\(s\) \['subject'\]"),
        ("path,subject,label,split\nclips/a.mp4,p1,anger,validation\n", r"manifest.csv:2: split"),
        ("path,subject,label\nnope.mp4,p1,anger\n", r"missing files: line 2"),
        ("path,subject,label\nclips/a.mp4,,anger\n", r"manifest.csv:2: path, subject and label"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path: Path, body: str, match: str) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(body)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_manifest(tmp_path / "manifest.csv", EMOTIONS_6)


def test_unknown_corpus_and_class() -> None:
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("iemocap", ".", EMOTIONS_4)
    with pytest.raises(ValueError, match="MSP-IMPROV has no class"):
        load_msp_improv(".", EMOTIONS_6)
