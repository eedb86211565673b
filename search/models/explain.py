"""What the registered model sees and where it looks: the figures a paper shows, made at registration.

- `inputs.png|svg`: the ROI slices the model was trained on, at its trained resolution, for a few patients of
  each stage, with the tumour mask's outline where there is one.
- `saliency.png|svg`: the SmoothGrad map (`trainers.saliency`) over those slices for correct and wrong calls,
  each patient's map made by the fold model that did not train on it and staged as its out-of-fold P(T2) was
  (the calls behind cv_auc, at the registered threshold). A radiomics model has no map (it is not a network).
- `explain.json`: which patients, their P(T2) and call, and the share of each map's mass inside the lesion mask
  beside a uniform map's (the mask's area share).

They are written to the study folder's `explain/` (the report shows them) and logged with the model's run.
`stagesearch predict --explain DIR` draws the same map for new scans with the registered fold models.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from search.study import write_json

RADIOMICS_PANEL_PX = 32  # a radiomics model reads no image size: its patients' ROIs drawn at the phantom's
PER_GROUP = 2  # patients per (stage, correct or wrong) group
GROUPS = ((0, True), (0, False), (1, True), (1, False))  # (true stage, called correctly)
STAGE = {0: "T1", 1: "T2"}


def _by_patient(items: list[Any]) -> dict[str, Any]:
    """The first scan's entry of each patient (a patient with several scans is shown by its first)."""
    out: dict[str, Any] = {}
    for item in items:
        out.setdefault(item.patient_id, item)
    return out


def pick_patients(oof: list[dict[str, Any]], threshold: float) -> dict[tuple[int, bool], list[dict]]:
    """Per (stage, correct) group the PER_GROUP patients called most confidently that way, from the OOF table
    (rows with patient_id, label, prob, fold)."""
    groups: dict[tuple[int, bool], list[dict]] = {g: [] for g in GROUPS}
    for row in oof:
        label = int(row["label"])
        called = int(float(row["prob"]) >= threshold)
        groups[(label, called == label)].append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: (-abs(float(r["prob"]) - threshold), str(r["patient_id"])))
        del rows[PER_GROUP:]
    return groups


def _shown_slice(lesion: Any, count: int) -> int:
    """The slice with the most lesion in it (the middle one without a mask)."""
    area = lesion.mask.reshape(len(lesion.mask), -1).sum(axis=1) if lesion is not None else np.zeros(count)
    return int(np.argmax(area)) if area.any() else count // 2


def explain_registered(locations: Any, refit: Any, log: Any = print, inputs: Any = None) -> Path | None:
    """Draw the registered model's input and saliency figures into the study folder's `explain/`; returns
    that folder (None, said, when the study's scans cannot be read now). `inputs`: the study's prepared inputs
    when the caller holds them (the search's driver), else prepared from the study folder."""
    from search.study.config import load_config
    from search.study.folder import StudyFormatError
    from search.study.inputs import CohortChangedError, prepare_inputs
    from trainers.preprocess import load_lesions
    from trainers.saliency import METHOD

    paths = locations.paths
    out = paths.explain
    shutil.rmtree(out, ignore_errors=True)
    try:
        inputs = inputs if inputs is not None else prepare_inputs(load_config(paths), paths)
    except (CohortChangedError, StudyFormatError, OSError, ValueError) as exc:
        log(f"note: no input or saliency figures: {exc}")
        return None
    prepared = inputs.prepared
    rois = _by_patient(list(prepared.rois))
    lesions = _by_patient(load_lesions(prepared.cohort, progress=False))
    threshold = float(refit.ensemble.threshold)
    groups = pick_patients([r for r in refit.result.oof if r["patient_id"] in rois], threshold)
    network = refit.kind != "radiomics"
    size = (
        max(m.config.resolution for m in getattr(refit.ensemble, "members", [refit.ensemble]))
        if network
        else RADIOMICS_PANEL_PX
    )
    panels = [
        _panel(refit, row, rois[str(row["patient_id"])], lesions.get(str(row["patient_id"])), threshold, size)
        for rows in groups.values()
        for row in rows
    ]
    shown = [p[0] for p in panels]
    out.mkdir(parents=True, exist_ok=True)
    _draw_inputs(panels, out / "inputs", size)
    if network:
        _draw_saliency(panels, out / "saliency")
    write_json(
        out / "explain.json",
        {
            "kind": refit.kind,
            "resolution": size,
            "threshold": threshold,
            "method": METHOD if network else None,
            "no_saliency": None if network else "a radiomics model has no saliency map: it is not a network",
            "patients": shown,
        },
    )
    log(
        f"figures: the model's inputs{' and saliency maps' if network else ''} of {len(shown)} patients in {out}"
    )
    return out


def _panel(refit: Any, row: dict[str, Any], roi: Any, lesion: Any, threshold: float, size: int) -> tuple:
    """(facts, shown slice, its map or None, its mask or None) of one patient: the slice with the most lesion,
    the map of the fold model that did not train on the patient (none for a radiomics model)."""
    from trainers.data import roi_tensor
    from trainers.saliency import ensemble_map, lesion_share, mask_at

    if refit.kind != "radiomics":
        slices, sal = ensemble_map(refit.ensemble, roi, fold=int(row["fold"]))
    else:
        slices, sal = roi_tensor(roi, size, 1)[:, 0].numpy(), None
    k = _shown_slice(lesion, len(slices))
    mask = mask_at(lesion, slices.shape[-1])[k] if lesion is not None and lesion.has_mask else None
    label, called = int(row["label"]), int(float(row["prob"]) >= threshold)
    facts = {
        "patient_id": str(row["patient_id"]),
        "label": STAGE[label],
        "called": STAGE[called],
        "correct": called == label,
        "p_t2": round(float(row["prob"]), 4),
        "fold": int(row["fold"]),
        "slice": k,
    }
    if sal is not None and mask is not None:
        facts["lesion_share"] = round(lesion_share(sal[k], mask), 4)
        facts["uniform_share"] = round(float(mask.mean()), 4)
    return facts, slices[k], sal[k] if sal is not None else None, mask


def _title(panel: dict[str, Any]) -> str:
    return f"{panel['patient_id']} {panel['label']}\nP(T2) {panel['p_t2']:.2f} -> {panel['called']}"


def _save(fig: Any, stem: Path) -> None:
    fig.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight")
    fig.savefig(stem.with_suffix(".svg"), bbox_inches="tight")


def _draw_inputs(panels: list[tuple], stem: Path, size: int) -> None:
    """One row per stage: each shown patient's slice at the trained resolution, the mask outlined in red."""
    import matplotlib.pyplot as plt

    rows = {0: [p for p in panels if p[0]["label"] == "T1"], 1: [p for p in panels if p[0]["label"] == "T2"]}
    cols = max(1, *(len(r) for r in rows.values()))
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.4), squeeze=False)
    for r, items in rows.items():
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(items):
                continue
            panel, image, _, mask = items[c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            if mask is not None and mask.max() > 0:
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(_title(panel), fontsize=7)
        axes[r][0].text(-0.15, 0.5, f"stage {STAGE[r]}", transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=9)  # fmt: skip
    fig.suptitle(f"What the model sees: ROI slices at {size} px (red: tumour mask)", fontsize=9)
    _save(fig, stem)
    plt.close(fig)


def _draw_saliency(panels: list[tuple], stem: Path) -> None:
    """One row per (stage, correct or wrong) group: each patient's slice and its map over it (mask in cyan)."""
    import matplotlib.pyplot as plt

    rows = [
        [p for p in panels if (p[0]["label"], p[0]["correct"]) == (STAGE[label], correct)]
        for label, correct in GROUPS
    ]
    cols = 2 * PER_GROUP
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 2.0 * len(rows)), squeeze=False)
    for r, items in enumerate(rows):
        label, correct = GROUPS[r]
        for c in range(cols):
            axes[r][c].axis("off")
        if not items:
            axes[r][0].text(0, 0.5, "no such call", fontsize=7, transform=axes[r][0].transAxes)
        for i, (panel, image, sal, mask) in enumerate(items):
            left, right = axes[r][2 * i], axes[r][2 * i + 1]
            left.imshow(image, cmap="gray", interpolation="nearest")
            left.set_title(_title(panel), fontsize=7)
            right.imshow(image, cmap="gray", interpolation="nearest")
            right.imshow(
                sal / max(float(sal.max()), 1e-12), cmap="inferno", alpha=0.6, interpolation="bilinear"
            )
            if mask is not None and mask.max() > 0:
                right.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
            share = panel.get("lesion_share")
            right.set_title(
                f"in mask {share:.0%} (area {panel['uniform_share']:.0%})" if share is not None else "map",
                fontsize=7,
            )
        axes[r][0].text(-0.15, 0.5, f"{STAGE[label]}, {'correct' if correct else 'wrong'}",
                        transform=axes[r][0].transAxes, rotation=90, va="center", ha="right", fontsize=8)  # fmt: skip
    fig.suptitle(
        "Where the model looks: SmoothGrad of P(T2), out-of-fold model (cyan: tumour mask)", fontsize=9
    )
    _save(fig, stem)
    plt.close(fig)


def explain_scans(ensemble: Any, scans: list[Any], folder: Path) -> list[Path]:
    """`predict --explain`: for each new scan its ROI slices and the registered fold models' mean map over each,
    one PNG (and SVG) per scan named by its patient; returns the PNGs."""
    import matplotlib.pyplot as plt

    from trainers.preprocess import preprocess_lesion
    from trainers.saliency import ensemble_map, mask_at

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for scan in scans:
        roi, lesion = preprocess_lesion(scan, ensemble.params)
        slices, sal = ensemble_map(ensemble, roi)
        masks = mask_at(lesion, slices.shape[-1]) if lesion.has_mask else None
        n = len(slices)
        fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.0), squeeze=False)
        for k in range(n):
            for ax in axes[:, k]:
                ax.axis("off")
                ax.imshow(slices[k], cmap="gray", interpolation="nearest")
            axes[1][k].imshow(sal[k] / max(float(sal.max()), 1e-12), cmap="inferno", alpha=0.6)
            if masks is not None and masks[k].max() > 0:
                axes[1][k].contour(masks[k], levels=[0.5], colors="cyan", linewidths=0.8)
            axes[0][k].set_title(f"slice {k + 1}", fontsize=7)
        fig.suptitle(
            f"{scan.patient_id}: ROI slices and where the model looks (SmoothGrad of P(T2))", fontsize=8
        )
        stem = folder / _file_name(scan.patient_id)
        _save(fig, stem)
        plt.close(fig)
        written.append(stem.with_suffix(".png"))
    return written


def _file_name(patient_id: str) -> str:
    """A patient id as a safe file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in patient_id) or "patient"
