"""Synthetic T2-weighted pelvic MRI cohort whose T1/T2 stage follows tumour anatomy (the no-data mode)."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from trainers.cache import cache_root
from trainers.cli import HelpFormatter
from trainers.phantom_geometry import Grid, Points, Shape, ell, frame, rotation, sd_capsule, shell, unit

GENERATOR_VERSION = "1"
DEFAULT_LABEL_NOISE = 0.7
DEFAULT_MATRIX = 128
INVASION_GAIN_MM = 4.0  # millimetres of breach beyond the outer stromal ring per unit of latent
SUPERSAMPLE = 3  # sub-slices averaged per slice: through-plane partial volume
_LATENT_STREAM = 0
SITES: dict[str, dict] = {
    "siteA": dict(
        p=0.45,
        gain=(900, 1100),
        offset=(0, 0),
        snr=(24, 32),
        slice=(3.5, 4.2),
        gamma=(0.95, 1.05),
        planes=("oblique", "axial"),
        p_perm=0.0,
        p_flip=0.2,
    ),
    "siteB": dict(
        p=0.35,
        gain=(2000, 2600),
        offset=(30, 80),
        snr=(18, 26),
        slice=(4.5, 5.0),
        gamma=(0.8, 0.9),
        planes=("sagittal", "oblique"),
        p_perm=0.3,
        p_flip=0.5,
    ),
    "siteC": dict(
        p=0.20,
        gain=(350, 500),
        offset=(5, 20),
        snr=(14, 20),
        slice=(3.8, 4.6),
        gamma=(1.1, 1.2),
        planes=("axial",),
        p_perm=0.6,
        p_flip=0.5,
    ),
}
_X, _Y, _Z = np.eye(3)  # RAS+ world axes: right, anterior, superior


@dataclass(frozen=True)
class PhantomSummary:
    """Where a generated cohort's manifest lies and how separable its labels are in principle."""

    manifest: Path
    oracle_auc: float
    n_t1: int
    n_t2: int


def draw_latents_and_labels(patients: int, seed: int, label_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Latent invasion per patient and its noisy label (1 = T2); patient i's draws ignore cohort size."""
    z = np.random.default_rng([seed, _LATENT_STREAM]).standard_normal((patients, 2))
    latent = z[:, 0]
    return latent, (latent + label_noise * z[:, 1] > 0).astype(np.int64)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _anatomy(rng: np.random.Generator, latent: float) -> tuple[list[Shape], Shape, np.ndarray, np.ndarray]:
    """Pelvic structures in paint order, then the tumour, which breaches the stroma as `latent` grows."""
    u = rng.uniform
    cx = rng.normal(0, 3, 3)  # cervix centre
    axis = unit([u(-0.15, 0.15), np.sin(np.radians(u(15, 45))), 1.0])
    fc = frame(axis, _X)  # cervix frame: u ~ right, v ~ anterior, w along the canal
    lr, ap, eye = u(42, 47), u(34, 38), np.eye(3)
    bc = cx + np.array([u(-2, 2), u(-4, 0), 0.0])  # body centre
    cav = (lr - u(9, 12), ap - u(6, 8), 1e6)
    muscle, fat, stroma = u(0.26, 0.34), u(0.85, 0.95), u(0.1, 0.18)
    shapes = [
        ell(bc, eye, (lr, ap, 1e6), fat),
        ell(bc, eye, (lr - u(4, 7), ap - u(4, 6), 1e6), muscle),
        ell(bc + [0, 1.5, 0], eye, cav, fat * u(0.9, 1.0)),
    ]
    for side in (-1, 1):
        head = bc + [side * (lr - u(8, 10)), u(0, 4), u(-6, 6)]
        shapes += shell(head, eye, (6,) * 3, (4.8,) * 3, 0.06, u(0.5, 0.65))
        shapes.append(ell(bc + [side * (cav[0] - 2.5), 0, 0], eye, (u(2.5, 4), cav[1] * 0.6, 40), muscle))
    sac = bc + [0, -(ap - u(6, 8)), 0]
    shapes += shell(sac, eye, (12, 5, 40), (10.5, 3.5, 40), 0.06, u(0.45, 0.6))
    a, b, c, t = u(11, 14), u(10, 13), u(15, 19), u(3, 5)  # cervix semi-axes and stromal ring thickness
    r0 = u(4.5, 8.5)  # nominal tumour radius, drawn independently of the latent
    a, b, c = max(a, r0 + t + 1.5), max(b, r0 + t + 1.5), max(c, r0 + t + 3)
    rec = cx + fc @ [0, -(b + u(6, 9)), 0]
    shapes += shell(rec, frame(_Z, _X), (7, 6, 45), (4.5, 3.5, 45), 0.22, u(0.05, 0.5))
    shapes += shell(cx + fc @ [0, b + u(7, 9), 10], eye, (15, 8, 12), (13.5, 6.5, 10.5), 0.22, 1.15)
    para = fc @ [0, 0, -0.2 * c]
    shapes.append(ell(cx + para, fc, (a + u(12, 16), b + 2, c * 0.9), u(0.78, 0.88)))
    for _ in range(rng.integers(3, 7)):  # parametrial vessels: flow voids
        start = cx + fc @ [rng.choice([-1, 1]) * (a + u(2, 12)), u(-6, 6), u(-c, c * 0.5)]
        end = start + 22 * unit(fc @ [u(-0.3, 0.3), u(-1, 1), u(-1, 1)])
        r = u(0.8, 1.6)
        vessel = lambda q, s=start, e=end, r=r: sd_capsule(q.p, s, e, r)  # noqa: E731
        shapes.append((vessel, (start + end) / 2, 12 + r, 0.08))
    fu = frame(rotation(fc[:, 0], -np.radians(u(10, 35))) @ axis, _X)  # anteflexed corpus
    cu, lu = cx + axis * (c - 4) + fu[:, 2] * u(16, 20), u(18, 22)
    shapes.append(ell(cu, fu, (u(16, 19), u(12, 15), lu), u(0.42, 0.52)))
    shapes += shell(cu, fu, (6.5, 4, lu * 0.8), (4, 2, lu * 0.7), u(0.22, 0.3), u(0.9, 1.0))
    shapes += shell(cx - axis * (c + 9), fc, (a + 1.5, 6, 16), (a - 1, 2.2, 15), u(0.2, 0.28), u(0.45, 0.6))
    shapes += shell(cx, fc, (a, b, c), (a - t, b - t, c - t), stroma, u(0.36, 0.46))
    shapes.append(ell(cx, fc, (1.3, 1.0, c - t), u(0.8, 0.95)))  # endocervical canal
    return shapes, _tumour(rng, latent, cx, fc, (a, b, c, t), r0), cx, fc


def _tumour(
    rng: np.random.Generator, latent: float, cx: np.ndarray, fc: np.ndarray, cerv: tuple, r0: float
) -> Shape:
    """Lobulated tumour in the cervix; a tongue ends INVASION_GAIN_MM * latent past the ring."""
    u = rng.uniform
    a, b, c, t = cerv
    ml = np.array(
        [
            u(-0.6, 0.6) * max(0.0, a - t - r0 - 1),
            u(-0.6, 0.6) * max(0.0, b - t - r0 - 1),
            u(-0.6, 0.6) * max(0.0, c - t - r0 - 1),
        ]
    )
    route = rng.choice(["left", "right", "vagina"], p=[0.35, 0.35, 0.3])
    side = {"left": -1.0, "right": 1.0}.get(str(route), 0.0)
    dl = unit([side, u(-0.3, 0.3), u(-0.3, 0.3)] if side else [u(-0.25, 0.25), u(-0.25, 0.25), -1.0])
    ax = np.array([a, b, c])
    qa, qb, qc = np.sum((dl / ax) ** 2), 2 * np.sum(ml * dl / ax**2), np.sum((ml / ax) ** 2) - 1
    s_out = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)  # exit distance through the outer ring
    tip, rt = s_out + INVASION_GAIN_MM * latent, r0 * u(0.35, 0.5)
    beyond = tip - s_out
    rn = rt * u(1.0, 1.5) * min(1.0, 0.4 + beyond / 6) if beyond > 0 else 0.0
    v_ext = np.pi * rt**2 * max(0.0, tip - rt - 0.8 * r0) + 4 / 3 * np.pi * rn**3
    v_tot = 4 / 3 * np.pi * r0**3  # lobes fill about half of the r0 ball: keep lobes + extension near that
    r_main = r0 * (max(v_tot - v_ext / 0.5, 0.3 * v_tot) / v_tot) ** (1 / 3)
    m, d = cx + fc @ ml, fc @ dl
    parts: list[Callable[[Points], np.ndarray]] = []
    for _ in range(rng.integers(3, 6)):
        rk = r_main * u(0.6, 0.85)
        ck = m + unit(rng.normal(size=3)) * u(0, r_main - rk)
        parts.append(lambda q, ck=ck, rk=rk: sd_capsule(q.p, ck, ck, rk))
    if tip - rt > 0:
        parts.append(lambda q, e=m + d * (tip - rt): sd_capsule(q.p, m, e, rt))
    if rn > 0:
        parts.append(lambda q, e=m + d * (tip - rn): sd_capsule(q.p, e, e, rn))
    if rng.random() < 0.5:  # endocervical growth towards the corpus: shape variety that does not change stage
        rs = r_main * u(0.5, 0.8)
        length = max(0.0, min(u(4, 12), c - t - ml[2] - rs - 0.5))
        parts.append(lambda q, e=m + fc[:, 2] * length: sd_capsule(q.p, m, e, rs))
    base, het = u(0.5, 0.68), u(0.04, 0.14)
    waves = rng.normal(size=(5, 3))
    waves *= (2 * np.pi / u(3, 9, (5, 1))) / np.linalg.norm(waves, axis=1, keepdims=True)
    phase = u(0, 2 * np.pi, 5)
    necro = (m, r_main * u(0.3, 0.5)) if rng.random() < 0.3 else None
    u_necro = u(0.95, 1.1)

    def value(q: Points) -> np.ndarray:
        p = q.p
        tex = np.cos(np.tensordot(waves.astype(np.float32), p, axes=1) + phase.reshape(5, 1, 1, 1)).sum(0)
        val = base * (1 + het * tex / np.sqrt(2.5))
        if necro is not None:
            dn = sd_capsule(p, necro[0], necro[0], necro[1])
            val += np.clip(0.5 - dn, 0, 1) * (u_necro - val)
        return val

    reach = max(tip + rn, r_main + 14) + 2
    return (lambda q: np.min(np.stack([f(q) for f in parts]), axis=0)), m, reach, value


def _acquisition(rng: np.random.Generator, matrix: int, spec: dict, cx: np.ndarray, fc: np.ndarray) -> tuple:
    """Affine and shape of one scan: site plane, obliquity, anisotropic voxels, permuted/flipped storage."""
    plane = rng.choice(spec["planes"])
    frames = {"axial": np.stack([_X, _Y, _Z], 1), "sagittal": np.stack([_Y, _Z, _X], 1), "oblique": fc}
    frame = frames[str(plane)]
    frame = rotation(rng.normal(size=3), np.radians(rng.uniform(0, 8))) @ frame
    pix = rng.uniform(0.74, 0.88) * DEFAULT_MATRIX / matrix
    dims = np.array(
        [
            round(matrix * rng.uniform(0.88, 1.14)),
            round(matrix * rng.uniform(0.88, 1.14)),
            rng.integers(16, 29),
        ]
    )
    zooms = np.array([pix, pix, rng.uniform(*spec["slice"])])
    perm = rng.permutation(3) if rng.random() < spec["p_perm"] else np.arange(3)
    signs = np.where(rng.random(3) < spec["p_flip"], -1.0, 1.0)
    m = frame[:, perm] * signs * zooms[perm]
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = cx + rng.normal(0, 4, 3) - m @ ((dims[perm] - 1) / 2)
    return affine, tuple(int(n) for n in dims[perm]), int(np.flatnonzero(perm == 2)[0])


def render_patient(
    seed: int, index: int, latent: float, matrix: int = DEFAULT_MATRIX
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One patient's (int16 image, uint8 tumour mask, affine, site), set by (seed, index, latent, matrix)."""
    rng = np.random.default_rng([seed, 1, index])
    site = str(rng.choice(list(SITES), p=[s["p"] for s in SITES.values()]))
    spec = SITES[site]
    shapes, tumour, cx, fc = _anatomy(rng, latent)
    affine, shape, sa = _acquisition(rng, matrix, spec, cx, fc)
    ga = affine.copy()  # supersampled grid: SUPERSAMPLE sub-slices per slice
    ga[:3, sa] /= SUPERSAMPLE
    ga[:3, 3] += affine[:3, sa] * (0.5 / SUPERSAMPLE - 0.5)
    gshape = list(shape)
    gshape[sa] *= SUPERSAMPLE
    grid = Grid(ga, tuple(gshape))
    width = 0.8 * float(np.linalg.norm(affine[:3, :3], axis=0).min())  # edge ramp about one in-plane pixel
    img, frac = np.zeros(gshape, np.float32), np.zeros(gshape, np.float32)
    for k, (fn, centre, radius, value) in enumerate([*shapes, tumour]):
        box = grid.box(centre, radius + 2 * width)
        if box is None:
            continue
        p = Points(grid, box)
        mem = np.clip(0.5 - fn(p) / width, 0, 1)
        img[box] += mem * ((value(p) if callable(value) else value) - img[box])
        if k == len(shapes):
            frac[box] = mem
    split = (*shape[:sa], shape[sa], SUPERSAMPLE, *shape[sa + 1 :])
    img, frac = img.reshape(split).mean(sa + 1), frac.reshape(split).mean(sa + 1)
    p = Grid(affine, shape).coords(tuple(slice(0, n) for n in shape), np.eye(3), -cx)
    co, q = rng.normal(0, 0.12, 6), np.clip(p / 60, -1, 1)  # smooth field, +-25% over the pelvis
    log_bias = co[0] * q[0] + co[1] * q[1] + co[2] * q[2] + co[3] * q[0] * q[1] + co[4] * q[1] * q[2]
    log_bias += co[5] * q[0] ** 2
    bias = np.exp(log_bias) * (1 + rng.uniform(0.1, 0.3) * q[1] ** 2)
    sigma = 0.9 / rng.uniform(*spec["snr"])
    clean = np.power(img, rng.uniform(*spec["gamma"])) * bias
    noisy = np.hypot(clean + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))  # Rician magnitude
    scaled = noisy * rng.uniform(*spec["gain"]) + rng.uniform(*spec["offset"])
    image = np.clip(np.rint(scaled), 0, np.iinfo(np.int16).max).astype(np.int16)
    return image, (frac >= 0.5).astype(np.uint8), affine, site


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI whose qform and sform both carry the scanner affine in millimetres."""
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def generate_cohort(
    out: str | Path,
    patients: int = 112,
    seed: int = 0,
    label_noise: float = DEFAULT_LABEL_NOISE,
    matrix: int = DEFAULT_MATRIX,
    *,
    progress: bool = False,
) -> PhantomSummary:
    """Write images, masks, manifest.csv and oracle.csv of a phantom cohort into `out` (deterministic)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    latents, labels = draw_latents_and_labels(patients, seed, label_noise)
    width, start, rows = max(3, len(str(patients))), time.perf_counter(), []
    for i in range(patients):
        pid = f"P{i + 1:0{width}d}"
        image, mask, affine, site = render_patient(seed, i, float(latents[i]), matrix)
        _save(image, affine, out / "images" / f"{pid}_t2.nii.gz")
        _save(mask, affine, out / "masks" / f"{pid}_mask.nii.gz")
        label = "T2" if labels[i] else "T1"
        rows.append((pid, f"images/{pid}_t2.nii.gz", f"masks/{pid}_mask.nii.gz", label, site))
        if progress and ((i + 1) % 16 == 0 or i + 1 == patients):
            print(f"  phantom: {i + 1}/{patients} patients ({time.perf_counter() - start:.1f} s)", flush=True)
    with open(out / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("patient_id", "image", "mask", "label", "site"), *rows])
    with open(out / "oracle.csv", "w", newline="") as fh:
        oracle = [(r[0], f"{lat:.6f}", int(y)) for r, lat, y in zip(rows, latents, labels, strict=True)]
        csv.writer(fh).writerows([("patient_id", "latent", "label"), *oracle])
    n_t2 = int(labels.sum())
    return PhantomSummary(out / "manifest.csv", roc_auc(latents, labels), patients - n_t2, n_t2)


def default_cohort(patients: int = 112, seed: int = 0, matrix: int = DEFAULT_MATRIX) -> Path:
    """Manifest of the default phantom cohort, generated once (atomically) into the cache and then reused."""
    params = dict(n=patients, seed=seed, matrix=matrix, noise=DEFAULT_LABEL_NOISE, version=GENERATOR_VERSION)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_root() / f"phantom-{digest}"
    if (final / "manifest.csv").is_file():
        return final / "manifest.csv"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        print(f"generating phantom cohort ({patients} patients, seed {seed}, matrix {matrix}) into {final}")
        generate_cohort(tmp, patients, seed, DEFAULT_LABEL_NOISE, matrix, progress=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its cohort
            if not (final / "manifest.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "manifest.csv"


def main(argv: list[str] | None = None) -> int:
    """Command line: generate a phantom cohort and print its class counts and oracle AUC."""
    ap = argparse.ArgumentParser(
        prog="python -m trainers.phantom", description=__doc__, formatter_class=HelpFormatter
    )
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--patients", type=int, default=112, help="number of patients")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument(
        "--label-noise", type=float, default=DEFAULT_LABEL_NOISE, help="label noise SD; latent SD 1"
    )
    ap.add_argument("--matrix", type=int, default=DEFAULT_MATRIX, help="in-plane matrix (FOV is fixed)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    s = generate_cohort(args.out, args.patients, args.seed, args.label_noise, args.matrix, progress=True)
    took = time.perf_counter() - start
    print(
        f"phantom cohort: {args.patients} patients, T1={s.n_t1}, T2={s.n_t2}, oracle AUC={s.oracle_auc:.3f}"
    )
    print(f"label noise {args.label_noise}, written in {took:.1f} s to {s.manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
