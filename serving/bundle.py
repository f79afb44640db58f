"""The model bundle: everything serving needs, in one folder, with no training code.

Layout::

    bundle.json                 format, version, actions, feature spec, catalog, manifests,
                                policy settings
    conversion.<key>.txt        LightGBM text models (key = "all", "base", "offset" or an
    churn.<key>.txt             action id)
    engagement.txt              the engagement model both outcomes read, if any
                                (serving/engagement.py)

Nothing is unpickled: models are LightGBM text, the rest is JSON.  A bundle still decides
whom a company contacts, so load bundles only from paths you trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.catalog import Catalog, catalog_from_dict
from features.schema import NO_ACTION
from features.spec import FeatureSpec
from serving.engagement import EngagementModel
from serving.scoring import OutcomeScorer

BUNDLE_FILE = "bundle.json"
#: The format written.  2 added the optional engagement model; 3 each outcome's
#: ``offset_scale`` (serving/scoring.py), so that a reader that only adds offsets on the
#: log-odds refuses a probability-scale model rather than misreading it.  Formats 1 and 2
#: (log-odds offsets, no scale written) are read as before.  4 added the policy's
#: ``conversion_effect_scale`` (:class:`Bundle`); formats 1-3 are read with 1, as they
#: were served.
FORMAT_VERSION = 4
READ_FORMATS = (1, 2, 3, 4)


class BundleError(ValueError):
    """A bundle folder that is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: models, feature spec, catalog and metadata."""

    path: Path
    model_version: str
    actions: tuple[str, ...]
    spec: FeatureSpec
    catalog: Catalog
    conversion: OutcomeScorer
    churn: OutcomeScorer
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The policy weighs each action's conversion uplift at this many times the model's:
    #: the logged label's effects understate one send's own (training/effect_scale.py).
    #: 1: the model's effects as they are.
    conversion_effect_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_scale(self.conversion_effect_scale)

    @property
    def channel_of(self) -> dict[str, str]:
        return {a.id: a.channel for a in self.catalog.actions}


def save_bundle(
    folder: str | Path,
    *,
    model_version: str,
    spec: FeatureSpec,
    catalog: Catalog,
    conversion: OutcomeScorer,
    churn: OutcomeScorer,
    metadata: Mapping[str, Any] | None = None,
    conversion_effect_scale: float = 1.0,
) -> Path:
    """Write a bundle atomically: to a temporary sibling folder, then renamed into place."""
    folder = Path(folder)
    _check_scale(conversion_effect_scale)
    if conversion.actions != churn.actions or conversion.actions[0] != NO_ACTION:
        raise BundleError("both scorers must share the action order, with 'none' first")
    if conversion.engagement is not churn.engagement:
        raise BundleError("both scorers must share one engagement model (or have none)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    manifest = {
        "format": FORMAT_VERSION,
        "model_version": model_version,
        "actions": list(conversion.actions),
        "feature_spec": spec.to_dict(),
        "catalog": catalog.to_dict(),
        "conversion": conversion.save(tmp, "conversion"),
        "churn": churn.save(tmp, "churn"),
        "engagement": None if conversion.engagement is None else conversion.engagement.save(tmp),
        "policy": {"conversion_effect_scale": float(conversion_effect_scale)},
        "metadata": dict(metadata or {}),
    }
    (tmp / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    if folder.exists():
        _remove_tree(folder)
    os.replace(tmp, folder)
    return folder


def load_bundle(folder: str | Path) -> Bundle:
    """Load a bundle folder; :class:`BundleError` says what is wrong with a bad one."""
    folder = Path(folder)
    manifest_path = folder / BUNDLE_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not a model bundle: {BUNDLE_FILE} not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable ({exc})") from exc
    if manifest.get("format") not in READ_FORMATS:
        raise BundleError(
            f"{manifest_path}: bundle format {manifest.get('format')!r}, this touchpoint reads "
            f"formats {', '.join(map(str, READ_FORMATS))}"
        )
    try:
        actions = tuple(manifest["actions"])
        spec = FeatureSpec.from_dict(manifest["feature_spec"])
        catalog = catalog_from_dict(manifest["catalog"])
        saved = manifest.get("engagement")
        engagement = (
            None if saved is None else EngagementModel.load(folder, saved, spec.feature_names)
        )
        conversion = OutcomeScorer.load(folder, manifest["conversion"], actions, engagement)
        churn = OutcomeScorer.load(folder, manifest["churn"], actions, engagement)
        # Formats 1-3 have no policy section: their conversion effects were served as is.
        scale = (manifest.get("policy") or {}).get("conversion_effect_scale", 1.0)
    except KeyError as exc:
        raise BundleError(f"{manifest_path}: missing key {exc}") from exc
    except Exception as exc:  # LightGBM raises its own error type on a damaged model file
        raise BundleError(f"{folder}: cannot load the bundle ({exc})") from exc
    return Bundle(
        path=folder,
        model_version=str(manifest["model_version"]),
        actions=actions,
        spec=spec,
        catalog=catalog,
        conversion=conversion,
        churn=churn,
        metadata=manifest.get("metadata", {}),
        conversion_effect_scale=scale,
    )


def _check_scale(k: object) -> None:
    """Refuse a conversion effect scale that is not a finite number > 0 (on save and on
    load: a bundle.json edited by hand must not rank by a NaN or a negative weight)."""
    if not (isinstance(k, int | float) and np.isfinite(k) and k > 0):
        raise BundleError(f"conversion_effect_scale must be a number > 0, got {k!r}")


def _remove_tree(folder: Path) -> None:
    for child in sorted(folder.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    folder.rmdir()
