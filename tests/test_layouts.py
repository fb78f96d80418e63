"""Every common layout of a labelled text dataset, built here in small, as its authors publish it (issue 21).

Each test checks the rows, the classes, the columns used, and what the data line says; none copies
rows of a real dataset.
"""

from __future__ import annotations

import random
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TOPICS
from vdcnn.data import load_split, load_splits
from vdcnn.errors import DataError

SENTIMENT = {
    "pos": ["a warm , funny and moving film", "the cast is superb and the script sparkles",
            "one of the best thrillers of the year", "a delight from start to finish"],
    "neg": ["a dull , lifeless mess", "the plot makes no sense at all", "two hours i will never get back",
            "flat jokes and wooden acting"],
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDCNN_CACHE", str(tmp_path / "cache"))


def sentences(kind: dict[str, list[str]], per_class: int, seed: int) -> list[tuple[str, str]]:
    """(text, class) rows: two phrases of the class joined, numbered so that none repeats."""
    rng = random.Random(seed)
    rows = [(f"{a} ; {b} ({seed}.{i})", c) for c, ph in kind.items() for i in range(per_class)
            for a, b in [rng.sample(ph, 2)]]
    rng.shuffle(rows)
    return rows


def notes(splits) -> str:
    return "\n".join(splits.notes)


# --------------------------------------------------------------------------------------------
# One file per class, one text per line
# --------------------------------------------------------------------------------------------


def test_one_file_per_class_with_latin1_lines(tmp_path):
    d = tmp_path / "rt-polaritydata"
    d.mkdir()
    rows = sentences(SENTIMENT, 10, seed=1)
    for c in ("pos", "neg"):
        lines = [t for t, k in rows if k == c]
        lines[0] = "a caf\u00e9 and a na\u00efve hero " + lines[0]  # the rt-polarity files are Latin-1
        (d / f"rt-polarity.{c}").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    s = load_splits(str(d), val_fraction=0.2)
    assert s.label_names == ["neg", "pos"] and s.rows_read == 20 and s.test is None
    texts = s.train.texts + s.val.texts
    assert sum("caf\u00e9 and a na\u00efve" in t for t in texts) == 2
    said = notes(s)
    assert "one file per class" in said and "rt-polarity.pos -> 'pos'" in said
    assert "2 of 20 lines are not UTF-8, decoded 2 as cp1252" in said


def test_subj_objective_subjective(tmp_path):
    d = tmp_path / "subj"
    d.mkdir()
    (d / "subj.objective").write_text("the film follows a family in 1950s ohio\nshe moves to paris to study\n"
                                      "the story is set on a whaling ship\n")
    (d / "subj.subjective").write_text("a gorgeous , heartfelt piece of work\nutterly charmless\n"
                                       "the most tedious hour of the year\n")
    ds = load_split(str(d))
    assert ds.label_names == ["objective", "subjective"] and ds.class_counts().tolist() == [3, 3]
    assert ds.texts[0] == "the film follows a family in 1950s ohio"


def test_readme_files_published_beside_the_class_files_are_no_class(tmp_path):
    # rt-polaritydata.tar.gz: the README at the top, the two class files in a folder; Subj
    # (rotten_imdb.tar.gz): subjdata.README.1.0 beside quote.tok.gt9.5000 and plot.tok.gt9.5000.
    mr = tmp_path / "mr"
    (mr / "rt-polaritydata").mkdir(parents=True)
    (mr / "rt-polaritydata.README.1.0.txt").write_text("Sentence polarity dataset v1.0\n\nsee the paper\n")
    rows = sentences(SENTIMENT, 10, seed=2)
    for c in ("pos", "neg"):
        (mr / "rt-polaritydata" / f"rt-polarity.{c}").write_text("".join(f"{t}\n" for t, k in rows if k == c))
    s = load_splits(str(mr), val_fraction=0.2)
    assert s.label_names == ["neg", "pos"] and s.rows_read == 20
    assert not any("polarity dataset" in t for t in s.train.texts + s.val.texts)
    subj = tmp_path / "subj"
    subj.mkdir()
    (subj / "subjdata.README.1.0").write_text("Subjectivity dataset v1.0\n")
    for name, c in (("quote.tok.gt9.5000", "pos"), ("plot.tok.gt9.5000", "neg")):
        (subj / name).write_text("".join(f"{t}\n" for t, k in rows if k == c))
    ds = load_split(str(subj))
    assert ds.label_names == ["plot", "quote"] and ds.class_counts().tolist() == [10, 10]
    # A table whose name holds such a word is data.
    from vdcnn.data.layout import data_files

    (subj / "software_license_reviews.csv").write_text("text,label\n")
    assert [p.name for p in data_files(subj)] == ["plot.tok.gt9.5000", "quote.tok.gt9.5000",
                                                  "software_license_reviews.csv"]


def test_labelled_trees_read_the_root_label_and_the_leaves(tmp_path):
    # The Stanford Sentiment Treebank as published (trees/train.txt, dev.txt, test.txt): one tree a
    # line, a label on every phrase. Only the root's label is the class: the phrase labels would
    # give the answer away, and a 'LABEL text' reading took '(3' as the label and kept them all.
    d = tmp_path / "trees"
    d.mkdir()
    words = {0: ("awful", "dreadful"), 1: ("dull", "weak"), 2: ("plain", "long"), 3: ("good", "nice"),
             4: ("brilliant", "superb")}
    rng = random.Random(3)

    def tree(k: int, i: int) -> str:
        a, b = words[k]
        return (f"({k} (2 (2 The) (2 film)) ({k} (2 -LRB-) ({k} (2 take{i}) ({k} (2 -RRB-) "
                f"({k} (2 is) ({k} ({k} {a}) (2 (2 and) ({k} {b}))))))))")

    for name, n in (("train.txt", 40), ("dev.txt", 10), ("test.txt", 10)):
        (d / name).write_text("".join(tree(k, i) + "\n" for i, k in enumerate(rng.choices(range(5), k=n))))
    s = load_splits(str(d))
    assert s.label_names == ["0", "1", "2", "3", "4"] and len(s.val) == 10 and len(s.test) == 10
    text = s.train.texts[0]
    k = int(s.label_names[s.train.labels[0]])
    assert text == f"The film ( take{text.split('take')[1].split()[0]} ) is {words[k][0]} and {words[k][1]}"
    assert not any("(" + str(j) in t for t in s.train.texts for j in range(5))
    assert "labelled trees" in notes(s)
    (d / "test.txt").write_text(tree(1, 0) + "\n" + "(2 (2 cut) short\n")
    with pytest.raises(DataError, match="test.txt: line 2 is not a labelled tree"):
        load_splits(str(d))


def test_the_one_unnamed_file_beside_the_training_file_is_its_test_split(tmp_path):
    # TREC as published: train_5500.label and TREC_10.label, 'COARSE:fine text' lines, no split
    # word in the test file's name.
    d = tmp_path / "trec"
    d.mkdir()
    rng = random.Random(4)
    qs = {"HUM:ind": "Who invented the {} ?", "LOC:city": "What city has the largest {} ?",
          "NUM:count": "How many {} are there ?", "DESC:def": "What is a {} ?"}
    nouns = ["bridge", "telephone", "canal", "piano", "radio", "tower"]

    def write(name: str, n: int) -> None:
        lines = [f"{k} {qs[k].format(rng.choice(nouns))} ({i})" for i, k in enumerate(rng.choices(list(qs), k=n))]
        (d / name).write_text("\n".join(lines) + "\n", encoding="latin-1")

    write("train_5500.label", 60)
    write("TREC_10.label", 12)
    s = load_splits(str(d))
    assert len(s.test) == 12 and s.test.source.endswith("TREC_10.label")
    assert s.label_names == sorted(qs)
    assert "TREC_10.label has no split word in its name; read as the test split" in notes(s)
    # A file laid out otherwise (a submission template, ids and labels only) is no test split.
    csv_dir = tmp_path / "kaggle"
    csv_dir.mkdir()
    (csv_dir / "train.csv").write_text("id,text,label\n" + "".join(
        f'{i},"{t}",{c}\n' for i, (t, c) in enumerate(sentences(SENTIMENT, 10, seed=5))))
    (csv_dir / "sample_submission.csv").write_text("id,label\n" + "".join(f"{i},pos\n" for i in range(8)))
    s = load_splits(str(csv_dir))
    assert s.test is None and s.rows_read == 20
    # Nor is a file its name calls unlabelled, however it is laid out.
    (csv_dir / "sample_submission.csv").unlink()
    (csv_dir / "unlabeled.csv").write_text((csv_dir / "train.csv").read_text())
    assert load_splits(str(csv_dir)).test is None


def test_a_test_file_without_labels_is_read_as_no_test_split(tmp_path):
    # GLUE's SST-2 as published: train.tsv and dev.tsv 'sentence<TAB>label', test.tsv 'index<TAB>sentence'.
    d = tmp_path / "SST-2"
    d.mkdir()
    rows = sentences(SENTIMENT, 12, seed=6)
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{int(c == 'pos')}\n" for t, c in rows[:18]))
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{int(c == 'pos')}\n" for t, c in rows[18:]))
    (d / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{t}\n" for i, (t, _) in enumerate(rows)))
    s = load_splits(str(d))
    assert s.test is None and len(s.train) == 18 and len(s.val) == 6 and s.label_names == ["0", "1"]
    assert "the test split has no labels, so it is not scored" in notes(s) and "index, sentence" in notes(s)
    # A training file without its label column is still an error.
    with pytest.raises(DataError, match="unknown column"):
        load_splits(str(d), label_column="polarity")


def test_a_pandas_export_with_its_unnamed_index_column(tmp_path):
    # DataFrame.to_csv() without index=False: the header starts with an empty name (",review,score").
    d = tmp_path / "reviews"
    d.mkdir()
    rows = sentences(SENTIMENT, 10, seed=7)
    (d / "reviews.csv").write_text(",review,score\n" + "".join(
        f'{i},"{t}",{float(c == "pos")}\n' for i, (t, c) in enumerate(rows)))
    ds = load_split(str(d))
    assert ds.label_names == ["0.0", "1.0"] and len(ds) == 20 and ds.texts[0] == rows[0][0]
    assert "ignored: 'Unnamed: 0'" in "\n".join(load_splits(str(d)).notes)


def test_class_folders_inside_the_one_folder_that_holds_them(tmp_path):
    # The livedoor news corpus (ldcc-20140209.tar.gz) as published: text/CLASS/CLASS-ID.txt, a
    # LICENSE.txt in every class folder, README.txt and CHANGES.txt beside them. Read one level too
    # high, every file was its own class.
    root = tmp_path / "ldcc"
    text = root / "text"
    text.mkdir(parents=True)
    (text / "README.txt").write_text("livedoor news corpus\n")
    (text / "CHANGES.txt").write_text("2012-09-04 first release\n")
    for c, words in (("sports-watch", "試合 選手 優勝 監督"), ("it-life-hack", "パソコン ソフト アプリ 画面"),
                     ("movie-enter", "映画 公開 主演 作品")):
        (text / c).mkdir()
        (text / c / "LICENSE.txt").write_text("CC BY-ND 2.1 JP\n")
        for i in range(8):
            (text / c / f"{c}-{4000 + i}.txt").write_text(
                f"http://news.livedoor.com/article/detail/{4000 + i}/\n2012-09-0{i + 1}T10:00:00+0900\n"
                + "".join(random.Random(i).choices(words.split(), k=12)) + "\n")
    for where in (root, text):
        s = load_splits(str(where), val_fraction=0.25)
        assert s.label_names == ["it-life-hack", "movie-enter", "sports-watch"] and s.rows_read == 24
        said = notes(s)
        assert "one folder per class" in said and "under text/" in said and "not read: CHANGES.txt" in said


def test_a_json_object_holding_its_records(tmp_path):
    import json

    rows = [{"text": t, "label": c} for t, c in sentences(SENTIMENT, 10, seed=8)]
    for indent in (None, 2):
        d = tmp_path / f"json-{indent}"
        d.mkdir()
        (d / "train.json").write_text(json.dumps({"version": "1.0", "data": rows}, indent=indent))
        ds = load_split(str(d))
        assert ds.label_names == ["neg", "pos"] and len(ds) == 20 and ds.texts[0] == rows[0]["text"]
    (d / "train.json").write_text(json.dumps({"train": rows, "test": rows}))
    with pytest.raises(DataError, match="several lists of records \\(train, test\\)"):
        load_split(str(d))


def test_fields_separated_by_several_characters_toutiao(tmp_path):
    # toutiao_cat_data.txt (the source of CLUE's TNEWS) as published: id_!_code_!_name_!_title_!_keywords,
    # no header, keywords sometimes empty; headlines are unspaced and often hold a number.
    cats = [("100", "news_story", "故事 情节 人物 小说 回忆"), ("101", "news_culture", "文化 历史 书法 博物馆 古籍"),
            ("103", "news_sports", "比赛 球队 冠军 联赛 球员")]
    rng = random.Random(5)
    lines = []
    for i in range(60):
        code, name, words = cats[i % 3]
        ws = words.split()
        keywords = ",".join(rng.sample(ws, 3)) if i % 4 else ""
        lines.append(f"{6552431613437805063 + i}_!_{code}_!_{name}_!_{2018 - i % 5}年{''.join(rng.choices(ws, k=4))}"
                     f"_!_{keywords}")
    d = tmp_path / "toutiao"
    d.mkdir()
    (d / "toutiao_cat_data.txt").write_text("\n".join(lines) + "\n")
    s = load_splits(str(d), val_fraction=0.2)
    assert s.label_names == ["news_culture", "news_sports", "news_story"] and s.rows_read == 60
    said = notes(s)
    assert "fields separated by '_!_'" in said and "text column 4 + column 5; label column 3" in said
    assert all("年" in t for t in s.train.texts)


def test_texts_and_labels_in_parallel_files(tmp_path):
    # Web of Science (WOS5736/) as published: X.txt a text a line, Y.txt the class of each line,
    # YL1.txt its domain and YL2.txt the area within the domain. Read as one file per class, X, Y,
    # YL1 and YL2 were four classes of lines.
    d = tmp_path / "WOS5736"
    d.mkdir()
    rng = random.Random(6)
    rows = []
    for i in range(40):
        domain, area = i % 2, i % 3
        words = (["circuit", "voltage", "signal"], ["memory", "child", "anxiety"])[domain]
        rows.append((f"we study {' '.join(rng.choices(words, k=6))} in area {area} ({i})", domain, area))
    rows[5] = ("", rows[5][1], rows[5][2])  # a blank abstract keeps its line, so the labels stay aligned
    (d / "X.txt").write_text("".join(f"{t}\n" for t, _, _ in rows))
    (d / "Y.txt").write_text("".join(f"{3 * dom + area}\n" for _, dom, area in rows))
    (d / "YL1.txt").write_text("".join(f"{dom}\n" for _, dom, _ in rows))
    (d / "YL2.txt").write_text("".join(f"{area}\n" for _, _, area in rows))
    ds = load_split(str(d))
    assert len(ds) == 39 and ds.label_names == ["0", "1", "2", "3", "4", "5"]
    truth = {t: str(3 * dom + area) for t, dom, area in rows if t}
    assert all(truth[t] == ds.label_names[y] for t, y in zip(ds.texts, ds.labels))
    said = notes(load_splits(str(d)))
    assert "a text a line in X.txt, its label on the same line of Y.txt (also labels: " in said
    assert "YL1.txt" in said and "YL2.txt" in said and "1 of 40 lines of X.txt are empty: dropped with their labels" in said
    domains = load_split(str(d), label_column="YL1.txt")
    assert domains.label_names == ["0", "1"] and len(domains) == 39


def test_parallel_label_files_named_for_a_label_come_first(tmp_path):
    # UIT-VSFC (Vietnamese): train/sents.txt, sentiments.txt (3 values) and topics.txt (4 values), two tasks.
    for split, n in (("train", 40), ("test", 12)):
        d = tmp_path / "vsfc" / split
        d.mkdir(parents=True)
        rows = [(t, c, str(i % 4)) for i, (t, c) in enumerate(sentences(SENTIMENT, n // 2, seed=n))]
        (d / "sents.txt").write_text("".join(f"{t}\n" for t, _, _ in rows))
        (d / "sentiments.txt").write_text("".join(f"{c}\n" for _, c, _ in rows))
        (d / "topics.txt").write_text("".join(f"{k}\n" for _, _, k in rows))
    s = load_splits(str(tmp_path / "vsfc"), val_fraction=0.2)
    assert s.label_names == ["neg", "pos"] and len(s.test) == 12
    assert "its label on the same line of sentiments.txt (also labels: topics.txt" in notes(s)
    assert load_split(str(tmp_path / "vsfc" / "test"), label_column="topics.txt").label_names == ["0", "1", "2", "3"]


def test_fasttext_labels_after_the_text(tmp_path):
    # fastText reads any __label__ word as a label, wherever it is on the line.
    f = tmp_path / "reviews.train"
    rows = sentences(SENTIMENT, 10, seed=9)
    f.write_text("".join(f"{t} __label__{c}\n" for t, c in rows))
    ds = load_split(str(f))
    assert ds.label_names == ["neg", "pos"] and ds.texts == [t for t, _ in rows]
    assert [ds.label_names[y] for y in ds.labels] == [c for _, c in rows]


def test_a_single_class_file_is_refused_clearly(tmp_path):
    f = tmp_path / "rt-polarity.pos"
    f.write_text("\n".join(t for t, _ in sentences(SENTIMENT, 10, seed=1)) + "\n")
    with pytest.raises(DataError, match="no label.*give the folder that holds them all"):
        load_split(str(f))


def test_text_semicolon_label_lines(tmp_path):
    # The emotion corpus as published (train.txt, val.txt, test.txt): "i feel ...;sadness", no header.
    d = tmp_path / "emotions"
    d.mkdir()
    def write(name, n, seed):
        rows = sentences(SENTIMENT, n, seed)
        (d / name).write_text("".join(f"{t.replace(' ; ', ' and ')};{c}\n" for t, c in rows))
        return rows
    train, val, test = write("train.txt", 20, 1), write("val.txt", 5, 2), write("test.txt", 6, 3)
    s = load_splits(str(d))
    assert s.label_names == ["neg", "pos"] and len(s.train) == 40 and len(s.val) == 10
    assert sorted(s.val.texts) == sorted(t.replace(" ; ", " and ") for t, _ in val)
    assert sorted(s.train.texts) == sorted(t.replace(" ; ", " and ") for t, _ in train)
    assert s.test.texts == [t.replace(" ; ", " and ") for t, _ in test]
    assert [s.label_names[y] for y in s.test.labels] == [c for _, c in test]


def test_prose_with_one_semicolon_a_line_is_no_table(tmp_path):
    f = tmp_path / "rt-polarity.pos"
    f.write_text("".join(f"{t.replace(' ; ', ' ; the film was ')}\n" for t, _ in sentences(SENTIMENT, 10, seed=4)))
    with pytest.raises(DataError, match="no label"):
        load_split(str(f))


@pytest.mark.parametrize("name", ["general-train-tagged.xml", "train.txt"])
def test_xml_records_are_refused_with_what_to_do(tmp_path, name):
    # TASS publishes its Spanish tweets as XML; read as lines, its markup would be texts without labels.
    f = tmp_path / name
    f.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<tweets>\n' + "".join(
        f"<tweet><content>{t}</content><polarity>{c}</polarity></tweet>\n" for t, c in sentences(SENTIMENT, 5, 7))
        + "</tweets>\n")
    with pytest.raises(DataError, match="markup is not read as a table; write its records as CSV or JSON lines"):
        load_split(str(f))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_files_are_read(tmp_path, encoding):
    # HARD (Arabic hotel reviews) is published as UTF-16 TSV; Windows' "Unicode text" is UTF-16 without a mark.
    d = tmp_path / "hard"
    d.mkdir()
    rows = [(f"\u0641\u0646\u062f\u0642 {t}", c) for t, c in sentences(SENTIMENT, 15, seed=5)]
    (d / "balanced-reviews.txt").write_bytes(
        ("no\trating\treview\r\n" + "".join(f"{i}\t{c}\t{t}\r\n" for i, (t, c) in enumerate(rows))).encode(encoding))
    s = load_splits(str(d), val_fraction=0.2)
    assert s.label_names == ["neg", "pos"] and s.rows_read == 30
    assert sorted(s.train.texts + s.val.texts) == sorted(t for t, _ in rows)
    assert f"balanced-reviews.txt is {encoding.upper()[:6]} text" in notes(s)


def test_utf16_class_files_and_documents(tmp_path):
    lines = tmp_path / "lines"
    lines.mkdir()
    rows = sentences(SENTIMENT, 10, seed=6)
    for c in ("pos", "neg"):
        (lines / f"rt-polarity.{c}").write_bytes("".join(f"{t}\n" for t, k in rows if k == c).encode("utf-16"))
    s = load_splits(str(lines), val_fraction=0.2)
    assert sorted(s.train.texts + s.val.texts) == sorted(t for t, _ in rows)
    docs = tmp_path / "docs"
    for i, (t, c) in enumerate(rows):
        (docs / c).mkdir(parents=True, exist_ok=True)
        (docs / c / f"{i}.txt").write_bytes(f"{t}\n".encode("utf-16"))
    s = load_splits(str(docs), val_fraction=0.2)
    assert sorted(x.strip() for x in s.train.texts + s.val.texts) == sorted(t for t, _ in rows)
    from vdcnn.data import read_texts
    assert [t for chunk in read_texts(str(lines / "rt-polarity.pos")) for t in chunk] == [t for t, k in rows if k == "pos"]


# --------------------------------------------------------------------------------------------
# 'label text' lines, split word inside the file name
# --------------------------------------------------------------------------------------------


def test_label_space_text_in_stsa_style_files(tmp_path):
    d = tmp_path / "sst-fine"
    d.mkdir()
    rng = random.Random(0)
    def write(name, n):
        rows = [(str(rng.randrange(5)), t) for t, _ in sentences(SENTIMENT, n, seed=len(name))]
        (d / name).write_text("".join(f"{lab} {t}\n" for lab, t in rows))
        return rows
    train, dev, test = write("stsa.fine.train", 20), write("stsa.fine.dev", 5), write("stsa.fine.test", 6)
    s = load_splits(str(d))
    assert s.label_names == sorted({lab for lab, _ in train})
    assert len(s.train) == 40 and len(s.val) == 10 and len(s.test) == 12
    assert "stsa.fine.dev" in s.val_note and sorted(s.val.texts) == sorted(t for _, t in dev)
    assert s.test.texts == [t for _, t in test]
    assert "'LABEL text' lines" in notes(s)


@pytest.mark.parametrize("sep", [" ", "\t"])
def test_split_word_inside_the_name(tmp_path, sep):
    d = tmp_path / "abstracts"
    d.mkdir()
    for split, n in (("training", 8), ("test", 3)):
        rows = sentences(SENTIMENT, n, seed=n)
        (d / f"medical_abstracts.{split}.txt").write_text("".join(f"{c}{sep}{t}\n" for t, c in rows))
    s = load_splits(str(d), val_fraction=0.25)
    assert s.label_names == ["neg", "pos"] and s.rows_read == 16 and len(s.test) == 6
    assert all("\t" not in t and not t.startswith(("pos", "neg")) for t in s.train.texts)


def test_split_words_are_those_of_the_installed_datasets_release(tmp_path):
    """The split keywords are written out (importing `datasets` is slow): they must be the release's, digits
    included among the separators (``train1.csv`` is a training file for `datasets` too)."""
    import re

    from datasets.data_files import NON_WORDS_CHARS, SPLIT_KEYWORDS

    from vdcnn.data.layout import SPLIT_SEPARATORS, SPLIT_WORDS

    assert SPLIT_WORDS == {str(k): tuple(v) for k, v in SPLIT_KEYWORDS.items()}
    assert SPLIT_SEPARATORS == f"[{NON_WORDS_CHARS}]+"
    assert re.split(SPLIT_SEPARATORS, "reviews_train1") == ["reviews", "train", ""]
    d = tmp_path / "numbered"
    d.mkdir()
    for split, n in (("train1", 8), ("test2", 3)):
        rows = sentences(SENTIMENT, n, seed=n)
        (d / f"{split}.tsv").write_text("label\ttext\n" + "".join(f"{c}\t{t}\n" for t, c in rows))
    s = load_splits(str(d), val_fraction=0.25)
    assert len(s.test) == 6 and s.rows_read == 16 and s.test.source.endswith("test2.tsv")


# --------------------------------------------------------------------------------------------
# One folder per class, one document per file
# --------------------------------------------------------------------------------------------

NEWS = {"rec.autos": TOPICS["sports"], "sci.med": TOPICS["tech"], "talk.politics.misc": TOPICS["business"]}


def _post(group: str, i: int, body: str) -> bytes:
    return (f"From: user{i}@example.edu\nSubject: Re: {body[:20]}\nOrganization: Example\nLines: 3\n\n"
            f"{body}.\n> quoted reply {i}\n").encode("latin-1")


def make_newsgroups(root: Path) -> dict[str, int]:
    """A 20-Newsgroups-style tree (<name>-train/<group>/<id>, <name>-test/...), one Latin-1 post."""
    counts = {}
    n = 1000
    for split, per in (("train", 4), ("test", 2)):
        for g, phrases in NEWS.items():
            (root / f"news-bydate-{split}" / g).mkdir(parents=True)
            for i in range(per):
                n += 1
                body = f"{phrases[i % len(phrases)]} and {phrases[(i + 1) % len(phrases)]}"
                if n == 1001:
                    body += " -- J\u00f6rg T\u00f6rnblom"
                (root / f"news-bydate-{split}" / g / str(n)).write_bytes(_post(g, n, body))
        counts[split] = per * len(NEWS)
    return counts


def test_class_folders_under_train_and_test_parents(tmp_path):
    root = tmp_path / "news"
    counts = make_newsgroups(root)
    s = load_splits(str(root), val_fraction=0.0)
    assert s.label_names == sorted(NEWS)
    assert len(s.train) == counts["train"] and len(s.test) == counts["test"]
    assert s.train.class_counts().tolist() == [4, 4, 4]
    assert any("J\u00f6rg T\u00f6rnblom" in t for t in s.train.texts)
    assert all(t.startswith("From: user") for t in s.train.texts)
    said = notes(s)
    assert "one folder per class" in said and "1 of 12 files are not UTF-8" in said


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_is_read_without_unpacking_into_the_dataset_folder(tmp_path, kind):
    tree = tmp_path / "tree"
    counts = make_newsgroups(tree)
    d = tmp_path / "download"
    d.mkdir()
    archive = d / f"news-bydate.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for p in sorted(tree.rglob("*")):
                z.write(p, p.relative_to(tree).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(tree, arcname=".")
    (d / "README.md").write_text("# the corpus as distributed\n")
    before = sorted(p.name for p in d.rglob("*"))
    for source in (d, archive):
        s = load_splits(str(source), val_fraction=0.0)
        assert (len(s.train), len(s.test), s.label_names) == (counts["train"], counts["test"], sorted(NEWS))
        assert "archive:" in notes(s)
    assert sorted(p.name for p in d.rglob("*")) == before
    assert (tmp_path / "cache" / "archives").is_dir()


def test_aclimdb_and_load_files_layouts(tmp_path):
    root = tmp_path / "aclImdb"
    for split, per in (("train", 3), ("test", 2)):
        for c in ("pos", "neg"):
            (root / split / c).mkdir(parents=True)
            for i, (t, _) in enumerate(sentences({c: SENTIMENT[c]}, per, seed=per)):
                (root / split / c / f"{i}_{7 if c == 'pos' else 2}.txt").write_text(t)
        (root / split / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0000001/usercomments\n")
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("an unlabelled review")
    (root / "imdb.vocab").write_text("the\nand\n")
    s = load_splits(str(root), val_fraction=0.0)
    assert s.label_names == ["neg", "pos"] and len(s.train) == 6 and len(s.test) == 4
    assert not any("unlabelled" in t for t in s.train.texts)
    assert "not read: unsup/, urls_pos.txt" in notes(s)
    # scikit-learn load_files / Keras text_dataset_from_directory: class folders, no split parents.
    flat = tmp_path / "flat"
    for c in ("pos", "neg"):
        (flat / c).mkdir(parents=True)
        for i, (t, _) in enumerate(sentences({c: SENTIMENT[c]}, 4, seed=9)):
            (flat / c / f"doc{i}.txt").write_text(t)
    s = load_splits(str(flat), val_fraction=0.25)
    assert s.rows_read == 8 and s.label_names == ["neg", "pos"] and s.test is None


# --------------------------------------------------------------------------------------------
# Hugging Face datasets on disk
# --------------------------------------------------------------------------------------------


def _hf_dataset():
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"),
                               "coarse_label": datasets.ClassLabel(names=["ABBR", "DESC", "ENTY"])})
    def part(n, seed):
        rng = random.Random(seed)
        return datasets.Dataset.from_dict(
            {"text": [f"What is question {seed}-{i} about {rng.choice(['cars', 'rain', 'tea'])} ?" for i in range(n)],
             "coarse_label": [i % 3 for i in range(n)]}, features=feats)
    return datasets.DatasetDict({"train": part(12, 1), "test": part(6, 2)})


def test_save_to_disk_folder_keeps_classlabel_names(tmp_path):
    _hf_dataset().save_to_disk(str(tmp_path / "trec_saved"))
    s = load_splits(str(tmp_path / "trec_saved"), val_fraction=0.0)
    assert s.label_names == ["ABBR", "DESC", "ENTY"] and s.label_rule.origin == "ClassLabel"
    assert len(s.train) == 12 and len(s.test) == 6 and s.test.class_counts().tolist() == [2, 2, 2]
    assert "load_from_disk" in notes(s)


@pytest.mark.parametrize("readme", [True, False])
def test_hub_style_repository_folder(tmp_path, readme):
    repo = tmp_path / "trec_repo"
    (repo / "data").mkdir(parents=True)
    for split, ds in _hf_dataset().items():
        ds.to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
    if readme:
        (repo / "README.md").write_text(
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
            "  - split: test\n    path: data/test-*\n---\n# TREC-style questions\n")
    s = load_splits(str(repo), val_fraction=0.0)
    assert s.label_names == ["ABBR", "DESC", "ENTY"]
    assert len(s.train) == 12 and len(s.test) == 6
    assert ("load_dataset" in notes(s)) == readme


# --------------------------------------------------------------------------------------------
# Columns: chosen by content, said, and never an annotation read as text
# --------------------------------------------------------------------------------------------


def test_annotation_columns_never_reach_the_text(tmp_path):
    # The layout of a hate-speech corpus: string labels, a header of plain words, and two annotations
    # of the same comment that correlate with the label.
    rng = random.Random(3)
    rows = []
    for i in range(30):
        hate = ["none", "offensive", "hate"][i % 3]
        comment = f"comment number {i} says {rng.choice(['this', 'that', 'the other'])} thing about them"
        rows.append((comment, str(hate == "hate"), "gender" if hate == "hate" else "others", hate))
    f = tmp_path / "train.tsv"
    f.write_text("comments\tcontain_gender_bias\tbias\thate\n" + "".join("\t".join(r) + "\n" for r in rows))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.rows_read == 30  # the header row is not a data row
    assert s.label_names == ["hate", "none", "offensive"]
    assert sorted(s.train.texts) == sorted(r[0] for r in rows)  # exactly the comments: no annotation
    assert not any(w in t for t in s.train.texts for w in ("True", "False", "gender", "others"))
    said = notes(s)
    assert "columns: text 'comments'; label 'hate' (3 values); ignored: 'contain_gender_bias', 'bias'" in said
    assert "--label-column" in said


def test_headerless_text_coarse_fine_says_which_label(tmp_path):
    rows = sentences(SENTIMENT, 12, seed=4)
    f = tmp_path / "questions.tsv"
    f.write_text("".join(f"{t}\t{c}\t{c}:{i % 2}\n" for i, (t, c) in enumerate(rows)))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.label_names == ["neg:0", "neg:1", "pos:0", "pos:1"]
    assert s.train.texts == [t for t, _ in rows]
    said = notes(s)
    assert "label column 3 (4 values); ignored: column 2" in said and "--label-column NUMBER" in said
    coarse = load_splits(str(f), label_column="2", text_columns=["1"], val_fraction=0.0)
    assert coarse.label_names == ["neg", "pos"] and coarse.train.texts == [t for t, _ in rows]


@pytest.mark.parametrize("header,pair", [("label\ttext_a", False), ("label\tsentence1", False),
                                         ("label\ttext_a\ttext_b", True)])
def test_glue_clue_column_names(tmp_path, header, pair):
    rows = sentences(SENTIMENT, 6, seed=5)
    f = tmp_path / "train.tsv"
    f.write_text(header + "\n" + "".join(f"{c}\t{t}" + (f"\t{t[::-1]}" if pair else "") + "\n" for t, c in rows))
    ds = load_split(str(f))
    assert ds.label_names == ["neg", "pos"]
    assert ds.texts == [f"{t} | {t[::-1]}" if pair else t for t, _ in rows]


def test_legacy_encoding_in_a_csv_is_decoded_and_counted(tmp_path):
    rows = sentences(SENTIMENT, 10, seed=6)
    rows[0] = ("un caf\u00e9 cr\u00e8me \u2013 na\u00efve", rows[0][1])  # cp1252: the en dash is 0x96
    body = "text,label\n" + "".join(f'"{t}",{c}\n' for t, c in rows)
    f = tmp_path / "train.csv"
    f.write_bytes(body.encode("cp1252"))
    s = load_splits(str(f), val_fraction=0.0)
    assert "un caf\u00e9 cr\u00e8me \u2013 na\u00efve" in s.train.texts and len(s.train) == 20
    assert "1 of 21 lines are not UTF-8, decoded 1 as cp1252" in notes(s)
    assert "columns: text 'text'; label 'label' (2 values)" in notes(s)
    f.write_bytes(body.replace(",neg\n", ",\n", 1).encode("cp1252"))
    with pytest.raises(DataError, match=rf"^{f}: 1 row\(s\) have an empty label"):  # the user's file, not the copy
        load_splits(str(f))


def test_cli_data_line_names_columns_layout_and_rule(tmp_path, capsys, monkeypatch):
    import sys

    from tests.conftest import TINY
    from vdcnn.cli.main import main

    f = tmp_path / "train.tsv"
    rows = [(f"comment {i} on {t}", str(i % 2 == 0), c) for i, (t, c) in enumerate(sentences(SENTIMENT, 10, 7))]
    f.write_text("comments\tflagged\tsentiment\n" + "".join("\t".join(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["vdcnn", "train", "--dataset", str(f), "--out", str(tmp_path / "run"),
                                      "--max-length", "32", "--epochs", "1", "--no-progress", "--no-baseline", *TINY])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    err = capsys.readouterr().err
    assert "columns: text 'comments'; label 'sentiment' (2 values); ignored: 'flagged'" in err
    assert "label rule: the 2 distinct training labels are the classes" in err


def test_headerless_text_label_id_reads_no_id_and_multi_label_ids(tmp_path):
    # The GoEmotions layout: text, label id(s), comment id; no header.
    rng = random.Random(8)
    rows = [(t, str(["0", "1", "2"].index("012"[i % 3])), "".join(rng.choice("abcdefghij") for _ in range(7)))
            for i, (t, _) in enumerate(sentences(SENTIMENT, 15, seed=8))]
    f = tmp_path / "train.tsv"
    f.write_text("".join("\t".join(r) + "\n" for r in rows))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.label_names == ["0", "1", "2"] and s.train.texts == [r[0] for r in rows]
    assert "label column 2 (3 values); ignored: column 3" in notes(s)
    rows[3] = (rows[3][0], "0,2", rows[3][2])
    f.write_text("".join("\t".join(r) + "\n" for r in rows))
    s = load_splits(str(f), val_fraction=0.0)  # several ids in a row: a multi-label dataset (tests/test_multilabel.py)
    assert s.train.multi_label and s.train.labels[3].tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"label column \(column 2\) holds several classes in one row \('0,2'\)"):
        load_splits(str(f), multi_label=False)


# --------------------------------------------------------------------------------------------
# Tables as their authors publish them: which column is the label, which the text
# --------------------------------------------------------------------------------------------

def test_urls_and_dates_are_never_read_as_text(tmp_path):
    """KLUE-YNAT's JSON: the headline is the text; its url and its date (Korean AM/PM words) are not."""
    import json

    rng = random.Random(0)
    d = tmp_path / "ynat"
    d.mkdir()
    for split, n in (("train", 40), ("dev", 10)):
        rows = sentences(TOPICS, n, seed=n)
        (d / f"ynat-v1.1_{split}.json").write_text(json.dumps([
            {"guid": f"ynat-v1_{split}_{i:05d}", "title": t, "label": c, "url": f"https://news.example.kr/a/{rng.randrange(10**9)}",
             "date": f"2016.{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}. {rng.choice(['오전', '오후'])} "
                     f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}"}
            for i, (t, c) in enumerate(rows)], ensure_ascii=False), encoding="utf-8")
    s = load_splits(str(d))
    assert not any("http" in t or "2016." in t for t in s.train.texts + s.val.texts)
    assert "text 'title'; label 'label'" in notes(s) and "'url'" in notes(s) and "'date'" in notes(s)


def test_a_sub_task_label_with_null_rows_gives_way_to_the_label_of_every_row(tmp_path):
    """OLID (OffensEval): subtask_b and subtask_c are NULL where subtask_a says NOT; subtask_a is the task."""
    d = tmp_path / "olid"
    d.mkdir()
    rows = sentences(SENTIMENT, 30, seed=1)
    sub = {"neg": ("OFF", "TIN", "IND"), "pos": ("NOT", "NULL", "NULL")}
    (d / "olid-training-v1.0.tsv").write_text("id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c\n" + "".join(
        f"{86426 + i}\t@USER {t}\t" + "\t".join(sub[c]) + "\n" for i, (t, c) in enumerate(rows)))
    s = load_splits(str(d))
    assert s.label_names == ["NOT", "OFF"]
    assert "label 'subtask_a'" in notes(s) and "also could be a label" in notes(s)


def test_star_ratings_are_the_label_beside_a_category_column(tmp_path):
    """amazon_reviews_multi's JSON lines: ``stars`` is the label, ``product_category`` an annotation."""
    import json

    d = tmp_path / "amazon"
    d.mkdir()
    for split, n in (("train", 30), ("test", 8)):
        rows = sentences(SENTIMENT, n, seed=n)
        (d / f"dataset_de_{split}.json").write_text("".join(json.dumps(
            {"review_id": f"de_{i:07d}", "stars": "5" if c == "pos" else "1", "review_body": t, "review_title": t[:12],
             "language": "de", "product_category": ["home", "toy", "book"][i % 3]}) + "\n" for i, (t, c) in enumerate(rows)))
    s = load_splits(str(d))
    assert s.label_names == ["1", "5"] and "label 'stars'" in notes(s)


def test_a_label_named_by_its_last_word_beside_constant_and_empty_columns(tmp_path):
    """Kaggle's Twitter US Airline Sentiment: the label is ``airline_sentiment``; ``retweet_count`` (all 0
    here) and ``airline_sentiment_confidence`` (all 1.0) are no one-column-per-label layout, and the
    mostly empty ``airline_sentiment_gold`` is no label."""
    d = tmp_path / "airline"
    d.mkdir()
    rows = sentences(SENTIMENT, 30, seed=2)
    lines = ["tweet_id,airline_sentiment,airline_sentiment_confidence,airline,airline_sentiment_gold,retweet_count,text"]
    for i, (t, c) in enumerate(rows):
        s = "positive" if c == "pos" else "negative"
        gold = s if i == 7 else ""
        lines.append(f"{570306133677760513 + i},{s},1.0,{['United', 'Delta'][i % 2]},{gold},0,\"@united {t}\"")
    (d / "Tweets.csv").write_text("\n".join(lines) + "\n")
    s = load_splits(str(d), val_fraction=0.0)
    assert s.label_names == ["negative", "positive"] and s.train.labels.ndim == 1
    assert "text 'text'; label 'airline_sentiment'" in notes(s)
    with pytest.raises(DataError, match="only one class \\(label column 'retweet_count'\\)"):
        load_splits(str(d), label_column="retweet_count", val_fraction=0.0)


def test_semicolons_and_single_quotes_as_10kgnad_writes_them(tmp_path):
    """10kGNAD (German news): ``Label;'Text'`` lines, no header; a text is quoted with ``'`` only when it
    holds a ``;`` or a ``'`` (doubled inside), as Python's csv module writes with ``quotechar="'"``."""
    import csv

    d = tmp_path / "10kGNAD"
    d.mkdir()
    expected = {}
    for split, n in (("train", 30), ("test", 8)):
        rows = [(t.replace(" ; ", "; ") + (" – Wiens Spieler's Ziel" if i % 3 == 0 else ""), c)
                for i, (t, c) in enumerate(sentences(SENTIMENT, n, seed=n))]
        with open(d / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=";", quotechar="'").writerows([("Sport" if c == "pos" else "Kultur", t)
                                                                  for t, c in rows])
        expected[split] = rows
    s = load_splits(str(d), val_fraction=0.0)
    assert s.label_names == ["Kultur", "Sport"]
    assert sorted(s.train.texts) == sorted(t for t, _ in expected["train"])  # quotes undone, ';' kept in the text
    assert s.test.texts == [t for t, _ in expected["test"]]
