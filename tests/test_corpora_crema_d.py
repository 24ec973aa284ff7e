"""CREMA-D loader on the real tables and the 6 real clips, in the official repository layout."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require
from tests.support import paths
from training.corpora.crema_d import (
    load_crema_d,
    plurality,
    read_demographics,
    read_votes,
)
from training.corpora.record import speaker_split
from vfer.classes import EMOTIONS_4, EMOTIONS_6

LABELS = paths.CREMA_D / "labels"


@pytest.fixture(scope="module")
def crema_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official layout: VideoFlash/, processedResults/tabulatedVotes.csv, VideoDemographics.csv."""
    require(paths.CREMA_D / "VideoFlash")
    root = tmp_path_factory.mktemp("crema")
    (root / "processedResults").mkdir()
    os.symlink(paths.CREMA_D / "VideoFlash", root / "VideoFlash")
    os.symlink(LABELS / "tabulatedVotes.csv", root / "processedResults" / "tabulatedVotes.csv")
    os.symlink(LABELS / "VideoDemographics.csv", root / "VideoDemographics.csv")
    return root


def test_labels_of_the_six_real_clips_match_clips_csv(crema_root: Path) -> None:
    corpus = load_crema_d(crema_root)
    got = {r.path.name: r.label for r in corpus}
    with (paths.CREMA_D / "clips.csv").open() as fh:
        want = {
            Path(row["flv_path"]).name: row["crowd_multimodal_vote"] for row in csv.DictReader(fh)
        }
    assert got == want
    # the acted SAD clip is "neutral" by the audio-visual plurality (N 5, F 4, H 1, S 1)
    assert got["1001_DFA_SAD_XX.flv"] == "neutral"
    assert corpus.counts["label_differs_from_intended"] == 1
    assert {r.subject for r in corpus} == {"1001"}
    assert {r.gender for r in corpus} == {"male"}


def test_four_classes_drop_and_count_the_others(crema_root: Path) -> None:
    corpus = load_crema_d(crema_root, EMOTIONS_4)
    assert sorted(r.label for r in corpus) == ["anger", "happiness", "neutral", "neutral"]
    assert corpus.counts["label_not_in_classes"] == 2  # disgust and fear


def test_face_only_votes_differ_from_audio_visual(crema_root: Path) -> None:
    corpus = load_crema_d(crema_root, modality="face")
    got = {r.path.name: r.label for r in corpus}
    with (paths.CREMA_D / "clips.csv").open() as fh:
        want = {
            Path(row["flv_path"]).name: row["crowd_face_only_vote"] for row in csv.DictReader(fh)
        }
    assert got == want


def test_plurality_reproduces_summary_table_for_every_clip() -> None:
    """The 3xxxxx rows are the audio-visual ones: their plurality is summaryTable's MultiModalVote."""
    require(LABELS)
    votes = read_votes(LABELS / "tabulatedVotes.csv")
    letter = {
        "anger": "A",
        "disgust": "D",
        "fear": "F",
        "happiness": "H",
        "neutral": "N",
        "sadness": "S",
    }
    with (LABELS / "summaryTable.csv").open() as fh:
        summary = {row["FileName"]: row["MultiModalVote"] for row in csv.DictReader(fh)}
    assert len(votes) == len(summary) == 7442
    ties = 0
    for name, counts in votes.items():
        vote = plurality(counts, None, "drop")
        if vote.tied:
            ties += 1
            assert ":".join(letter[t] for t in vote.tied) == summary[name]
        else:
            assert vote.label is not None and letter[vote.label] == summary[name]
    assert ties == 420


def test_ties_are_dropped_or_resolved_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "crema"
    (root / "VideoMP4").mkdir(parents=True)
    (root / "processedResults").mkdir()
    header = '"","A","D","F","H","N","S","fileName","numResponses"\n'
    rows = [
        '"300001",4,0,0,0,4,0,"1001_IEO_ANG_HI",8\n',  # tie, acted emotion among the tied
        '"300002",0,0,3,0,0,3,"1001_IEO_HAP_HI",6\n',  # tie without the acted emotion
        '"300003",0,0,0,0,0,0,"1001_IEO_NEU_XX",0\n',  # no votes
        '"200004",9,0,0,0,0,0,"1001_IEO_SAD_XX",9\n',  # face-only row: ignored
        '"300005",1,0,0,0,0,7,"1002_IEO_SAD_XX",8\n',
    ]
    (root / "processedResults" / "tabulatedVotes.csv").write_text(header + "".join(rows))
    (root / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n1001,30,"Male","Asian","Not Hispanic"\n'
        '1002,30,"Female","Asian","Not Hispanic"\n1003,30,"Female","Asian","Not Hispanic"\n'
    )
    for name in [
        "1001_IEO_ANG_HI",
        "1001_IEO_HAP_HI",
        "1001_IEO_NEU_XX",
        "1001_IEO_SAD_XX",
        "1002_IEO_SAD_XX",
    ]:
        (root / "VideoMP4" / f"{name}.mp4").write_bytes(b"")
    (root / "VideoMP4" / "notes.txt").write_text("x")
    kw = {"dev_actors": 0, "test_actors": 1}
    dropped = load_crema_d(root, **kw)
    assert [r.path.stem for r in dropped] == ["1002_IEO_SAD_XX"]
    assert dropped.counts["tie"] == 2 and dropped.counts["tie_dropped"] == 2
    assert dropped.counts["no_votes"] == 1
    assert dropped.counts["missing_votes"] == 1  # its only row is a face-only one
    assert dropped.counts["unrecognised_file"] == 1
    resolved = load_crema_d(root, ties="intended", **kw)
    assert {r.path.stem: r.label for r in resolved} == {
        "1001_IEO_ANG_HI": "anger",
        "1002_IEO_SAD_XX": "sadness",
    }
    assert resolved.counts["tie_resolved_to_intended"] == 1
    assert resolved.counts["tie_dropped"] == 1


def test_missing_tables_name_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "VideoFlash").mkdir()
    with pytest.raises(FileNotFoundError, match=r"tabulatedVotes\.csv not found"):
        load_crema_d(tmp_path)


def test_actor_split_is_speaker_independent_gender_balanced_and_seeded() -> None:
    genders = read_demographics(require(LABELS / "VideoDemographics.csv"))
    assert Counter(genders.values()) == {"male": 48, "female": 43}
    split = speaker_split(genders, dev=4, test=31, seed=0)
    sizes = Counter(split.values())
    assert sizes == {"train": 56, "dev": 4, "test": 31}
    by = Counter((s, genders[a]) for a, s in split.items())
    assert by[("dev", "female")] == by[("dev", "male")] == 2
    assert abs(by[("test", "female")] - by[("test", "male")]) == 1
    assert speaker_split(genders, 4, 31, seed=0) == split
    assert speaker_split(genders, 4, 31, seed=1) != split


def test_records_carry_their_actors_split(crema_root: Path) -> None:
    for seed in range(6):
        corpus = load_crema_d(crema_root, seed=seed)
        genders = read_demographics(LABELS / "VideoDemographics.csv")
        want = speaker_split(genders, 4, 31, seed)["1001"]
        assert {r.split for r in corpus} == {want}


@given(
    st.dictionaries(st.sampled_from(EMOTIONS_6), st.integers(0, 20), min_size=1),
    st.sampled_from(EMOTIONS_6),
)
def test_plurality_properties(counts: dict[str, int], intended: str) -> None:
    vote = plurality(counts, intended, "intended")
    top = max(counts.values())
    if top == 0:
        assert vote.label is None and vote.total == 0
    elif vote.label is not None:
        assert counts[vote.label] == top
        assert not vote.tied or vote.label == intended
    else:
        assert len(vote.tied) > 1 and intended not in vote.tied
