"""The datasets in $VDCNN_DATA_DIR read exactly as they did before the layout work of issue 21.

The figures (rows, classes, per-class counts, and a hash of every text with its label) were recorded
from main (2d1a7ee) with the same calls; they are figures about the shared rows, not copies of them.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import real_data_dir
from vdcnn.data import load_split, load_splits

# folder -> classes, rows read, and (rows, per-class counts, hash) of train / validation / test.
FOLDERS = {
    "ag_news": {
        "classes": [
            "World",
            "Sports",
            "Business",
            "Sci/Tech"
        ],
        "rows_read": 63743,
        "train": [
            57368,
            [
                14244,
                14373,
                14362,
                14389
            ],
            "6dadd5ee9ba4e211"
        ],
        "val": [
            6375,
            [
                1583,
                1597,
                1596,
                1599
            ],
            "b0326c4efb3c3130"
        ],
        "test": [
            7600,
            [
                1900,
                1900,
                1900,
                1900
            ],
            "0f76a68d609e7c79"
        ]
    },
    "sms_spam": {
        "classes": [
            "ham",
            "spam"
        ],
        "rows_read": 4465,
        "train": [
            4018,
            [
                3487,
                531
            ],
            "cea4b16acb13eabe"
        ],
        "val": [
            447,
            [
                388,
                59
            ],
            "b03238bebf7b13e6"
        ],
        "test": [
            1109,
            [
                952,
                157
            ],
            "09a51271e29ee69e"
        ]
    },
    "sst2": {
        "classes": [
            "negative",
            "positive"
        ],
        "rows_read": 6920,
        "train": [
            6920,
            [
                3310,
                3610
            ],
            "c0031ca991930a9c"
        ],
        "val": [
            872,
            [
                428,
                444
            ],
            "980a7f729f059449"
        ],
        "test": [
            1821,
            [
                912,
                909
            ],
            "9f03f509d0a53102"
        ]
    },
    "tnews": {
        "classes": [
            "news_agriculture",
            "news_car",
            "news_culture",
            "news_edu",
            "news_entertainment",
            "news_finance",
            "news_game",
            "news_house",
            "news_military",
            "news_sports",
            "news_stock",
            "news_story",
            "news_tech",
            "news_travel",
            "news_world"
        ],
        "rows_read": 53360,
        "train": [
            48022,
            [
                2597,
                3706,
                3673,
                3093,
                4478,
                4680,
                3051,
                1896,
                3269,
                3592,
                231,
                1000,
                5359,
                3031,
                4366
            ],
            "15757cb2d6032344"
        ],
        "val": [
            5338,
            [
                289,
                412,
                408,
                344,
                498,
                520,
                339,
                211,
                363,
                399,
                26,
                111,
                596,
                337,
                485
            ],
            "244fa838bcf261dc"
        ],
        "test": [
            10000,
            [
                494,
                791,
                736,
                646,
                910,
                956,
                659,
                378,
                716,
                767,
                45,
                215,
                1089,
                693,
                905
            ],
            "1351881e0819996e"
        ]
    },
    "trec6": {
        "classes": [
            "ABBR",
            "DESC",
            "ENTY",
            "HUM",
            "LOC",
            "NUM"
        ],
        "rows_read": 5452,
        "train": [
            4906,
            [
                77,
                1046,
                1125,
                1101,
                751,
                806
            ],
            "a214e48f862d3fd4"
        ],
        "val": [
            546,
            [
                9,
                116,
                125,
                122,
                84,
                90
            ],
            "0febb863973782a4"
        ],
        "test": [
            500,
            [
                9,
                138,
                94,
                65,
                81,
                113
            ],
            "148f6cf1e9848293"
        ]
    }
}

# single file -> (rows, classes, hash) read with load_split(file)
FILES = {
    "ag_news/test.csv.gz": [
        7600,
        4,
        "0f76a68d609e7c79"
    ],
    "ag_news/train.csv.gz": [
        63743,
        4,
        "a777459fa73d83fd"
    ],
    "ag_news_holdout/test.csv.gz": [
        2000,
        4,
        "752a3fbf91494095"
    ],
    "sms_spam/raw/SMSSpamCollection": [
        5574,
        2,
        "e0faa07c347f098b"
    ],
    "sms_spam/test.csv": [
        1109,
        2,
        "09a51271e29ee69e"
    ],
    "sms_spam/train.csv": [
        4465,
        2,
        "d26751041af9bc5f"
    ],
    "sst2/dev.csv": [
        872,
        2,
        "980a7f729f059449"
    ],
    "sst2/test.csv": [
        1821,
        2,
        "9f03f509d0a53102"
    ],
    "sst2/train.csv": [
        6920,
        2,
        "c0031ca991930a9c"
    ],
    "tnews/test.csv.gz": [
        10000,
        15,
        "1351881e0819996e"
    ],
    "tnews/train.csv.gz": [
        53360,
        15,
        "3fe644276b363804"
    ],
    "trec6/test.csv": [
        500,
        6,
        "148f6cf1e9848293"
    ],
    "trec6/train.csv": [
        5452,
        6,
        "b35c441d20278a4b"
    ]
}


def _digest(ds) -> str:
    h = hashlib.sha256()
    for text, label in zip(ds.texts, ds.labels):
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00%d\x01" % int(label))
    return h.hexdigest()[:16]


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_shared_folder_reads_as_before(folder):
    root = real_data_dir()
    want = FOLDERS[folder]
    s = load_splits(str(root / folder), val_fraction=0.1, seed=0)
    assert s.label_names == want["classes"]
    assert s.rows_read == want["rows_read"]
    for name, ds in (("train", s.train), ("val", s.val), ("test", s.test)):
        assert (len(ds), ds.class_counts().tolist(), _digest(ds)) == tuple(want[name]), name


@pytest.mark.parametrize("name", sorted(FILES))
def test_shared_file_reads_as_before(name):
    ds = load_split(str(real_data_dir() / name))
    assert (len(ds), ds.n_classes, _digest(ds)) == tuple(FILES[name])


# README of 20newsgroups_bydate: files per group, train / test.
NEWSGROUPS = {
    "alt.atheism": (480, 319), "comp.graphics": (584, 389), "comp.os.ms-windows.misc": (591, 394),
    "comp.sys.ibm.pc.hardware": (590, 392), "comp.sys.mac.hardware": (578, 385), "comp.windows.x": (593, 395),
    "misc.forsale": (585, 390), "rec.autos": (594, 396), "rec.motorcycles": (598, 398),
    "rec.sport.baseball": (597, 397), "rec.sport.hockey": (600, 399), "sci.crypt": (595, 396),
    "sci.electronics": (591, 393), "sci.med": (594, 396), "sci.space": (593, 394),
    "soc.religion.christian": (599, 398), "talk.politics.guns": (546, 364), "talk.politics.mideast": (564, 376),
    "talk.politics.misc": (465, 310), "talk.religion.misc": (377, 251),
}


def test_20newsgroups_reads_as_distributed(tmp_path, monkeypatch):
    folder = real_data_dir() / "20newsgroups_bydate"
    if not (folder / "20news-bydate.tar.gz").is_file():
        pytest.skip("20news-bydate.tar.gz not in VDCNN_DATA_DIR")
    monkeypatch.setenv("VDCNN_CACHE", str(tmp_path / "cache"))
    s = load_splits(str(folder), val_fraction=0.0)
    assert s.label_names == sorted(NEWSGROUPS)
    assert (len(s.train), len(s.test)) == (11_314, 7_532)
    assert s.train.class_counts().tolist() == [NEWSGROUPS[g][0] for g in s.label_names]
    assert s.test.class_counts().tolist() == [NEWSGROUPS[g][1] for g in s.label_names]
    said = "\n".join(s.notes)
    assert "29 of 7,532 files are not UTF-8" in said  # raw Latin-1 posts of the test split, none dropped
    assert not any(p.name != "README.md" and p.suffix != ".gz" for p in folder.iterdir())  # nothing unpacked there
    assert s.train.texts[0].startswith("From: ")
