"""Registry datasets from the Hugging Face hub, failing fast and clearly when it is out of reach."""

from __future__ import annotations

import os
from contextlib import contextmanager

from vdcnn.errors import DataError

from .files import Table, class_label_names, columns_of, one_line
from .registry import DATA_DIR_ENV, DatasetSpec

# Seconds for the one metadata request that tells whether the hub answers at all.
HUB_TIMEOUT_S = 5.0


def _offline_message(spec: DatasetSpec, why: str) -> str:
    return (f"{why}: cannot download dataset {spec.name!r} ({spec.hub_id}); point at local files instead "
            f"with --dataset PATH (a file or a folder with train/test files) or set {DATA_DIR_ENV} to a folder "
            f"containing {spec.name}/")


def _hub_answers(spec: DatasetSpec) -> tuple[bool, str]:
    """Whether the hub answers one request for the dataset's metadata, and why not.

    `load_dataset` retries an unreachable hub with back-off for about 25 s (huggingface_hub's
    ``http_backoff``) before it falls back to its cache. One request without retries, through
    huggingface_hub's own HTTP session (so its proxy, NO_PROXY, SOCKS and CA settings apply exactly
    as for the download), tells first. Any HTTP answer, even an error, means the hub is reachable.
    """
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi(endpoint=datasets.config.HF_ENDPOINT).dataset_info(spec.hub_id, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError:
        return True, ""
    except Exception as exc:  # the transport's connect/timeout/proxy errors: no answer
        return False, one_line(exc)
    return True, ""


@contextmanager
def _offline_mode():
    """The libraries' own offline mode (what ``HF_HUB_OFFLINE=1`` sets at import), for one call:
    `load_dataset` then reads its cache without touching the network."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _offline_env() -> bool:
    """HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE, read now: `datasets` reads them once, at import, so a
    variable set later (a notebook, a test) would otherwise be missed."""
    value = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def load_hub(spec: DatasetSpec, split: str):
    """``split`` of a registry dataset as a `datasets.Dataset`: from the hub, or from the `datasets`
    cache when offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``, or the hub does not answer)."""
    import datasets

    offline = bool(datasets.config.HF_HUB_OFFLINE) or _offline_env()
    why = "HF_HUB_OFFLINE is set and no cached copy was found"
    if not offline:
        reachable, error = _hub_answers(spec)
        offline = not reachable
        why = f"the Hugging Face hub is unreachable ({error}) and no cached copy was found"
    try:
        if offline:
            with _offline_mode():
                return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
        return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    except Exception as exc:
        if offline:
            raise DataError(_offline_message(spec, why)) from None
        raise DataError(f"cannot load {spec.hub_id} split {split!r} from the Hugging Face hub "
                        f"({one_line(exc)})") from None


def hub_table(hub_dataset) -> Table:
    """The columns (and ClassLabel names) of a loaded hub split."""
    return Table(columns=columns_of(hub_dataset), class_label_names=class_label_names(hub_dataset))
