"""The benchmark datasets by name: where they live on the hub and in ``$VDCNN_DATA_DIR``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "VDCNN_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark dataset: where it lives on the hub and how its columns map to text/label."""

    name: str
    hub_id: str
    text_fields: tuple[str, ...]
    label_field: str
    label_names: tuple[str, ...]
    hub_config: str | None = None
    test_split: str = "test"
    validation_split: str | None = None  # the hub split used as validation, if it has one


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ag_news",
            hub_id="fancyzhx/ag_news",
            text_fields=("text",),
            label_field="label",
            label_names=("World", "Sports", "Business", "Sci/Tech"),
        ),
        DatasetSpec(
            name="yelp_polarity",
            hub_id="fancyzhx/yelp_polarity",
            text_fields=("text",),
            label_field="label",
            label_names=("negative", "positive"),
        ),
        DatasetSpec(
            name="yelp_full",
            hub_id="Yelp/yelp_review_full",
            text_fields=("text",),
            label_field="label",
            label_names=("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
        ),
        DatasetSpec(
            name="dbpedia",
            hub_id="fancyzhx/dbpedia_14",
            text_fields=("title", "content"),
            label_field="label",
            label_names=(
                "Company",
                "EducationalInstitution",
                "Artist",
                "Athlete",
                "OfficeHolder",
                "MeanOfTransportation",
                "Building",
                "NaturalPlace",
                "Village",
                "Animal",
                "Plant",
                "Album",
                "Film",
                "WrittenWork",
            ),
        ),
        DatasetSpec(
            name="yahoo_answers",
            hub_id="community-datasets/yahoo_answers_topics",
            text_fields=("question_title", "question_content", "best_answer"),
            label_field="topic",
            label_names=(
                "Society & Culture",
                "Science & Mathematics",
                "Health",
                "Education & Reference",
                "Computers & Internet",
                "Sports",
                "Business & Finance",
                "Entertainment & Music",
                "Family & Relationships",
                "Politics & Government",
            ),
        ),
        DatasetSpec(
            name="amazon_polarity",
            hub_id="fancyzhx/amazon_polarity",
            text_fields=("title", "content"),
            label_field="label",
            label_names=("negative", "positive"),
        ),
        # UNCERTAIN: the char-CNN "Amazon Review Full" set (5 classes, 3M train / 650k test) has
        # no canonical Hugging Face id. This community upload is a copy of amazon_review_full_csv;
        # its column names are a best guess (not verified offline). Prefer pointing
        # VDCNN_DATA_DIR (or --dataset PATH) at the original CSV files.
        DatasetSpec(
            name="amazon_full",
            hub_id="yassiracharki/Amazon_Reviews_for_Sentiment_Analysis_fine_grained_5_classes",
            text_fields=("review_title", "review_text"),
            label_field="class_index",
            label_names=("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
        ),
        DatasetSpec(
            name="sogou_news",
            hub_id="community-datasets/sogou_news",
            text_fields=("title", "content"),
            label_field="label",
            label_names=("sports", "finance", "entertainment", "automobile", "technology"),
        ),
    )
}

# Other spellings accepted for registry names (hub / char-CNN archive names).
ALIASES = {
    "ag-news": "ag_news",
    "yelp_review_polarity": "yelp_polarity",
    "yelp_review_full": "yelp_full",
    "dbpedia_14": "dbpedia",
    "yahoo_answers_topics": "yahoo_answers",
    "amazon_review_polarity": "amazon_polarity",
    "amazon_review_full": "amazon_full",
}

# Folder names under $VDCNN_DATA_DIR tried for a registry name (the char-CNN archives unpack
# to e.g. ``ag_news_csv/``).
LOCAL_DIRS = {
    "ag_news": ("ag_news", "ag_news_csv"),
    "yelp_polarity": ("yelp_polarity", "yelp_review_polarity", "yelp_review_polarity_csv"),
    "yelp_full": ("yelp_full", "yelp_review_full", "yelp_review_full_csv"),
    "dbpedia": ("dbpedia", "dbpedia_14", "dbpedia_csv"),
    "yahoo_answers": ("yahoo_answers", "yahoo_answers_topics", "yahoo_answers_csv"),
    "amazon_polarity": ("amazon_polarity", "amazon_review_polarity", "amazon_review_polarity_csv"),
    "amazon_full": ("amazon_full", "amazon_review_full", "amazon_review_full_csv"),
    "sogou_news": ("sogou_news", "sogou_news_csv"),
}


def resolve_name(source: str) -> str | None:
    """The registry name ``source`` spells (a name or an alias), or None for a path."""
    key = str(source).strip()
    if key in REGISTRY:
        return key
    return ALIASES.get(key)


def local_registry_dir(name: str) -> Path | None:
    """The folder under ``$VDCNN_DATA_DIR`` holding registry dataset ``name``, if any."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        return None
    base = Path(root).expanduser()
    for sub in LOCAL_DIRS.get(name, (name,)):
        d = base / sub
        if d.is_dir():
            return d
    return None
