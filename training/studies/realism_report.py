"""Phantoms beside the real CT cases in ../shared/data/real, on the same measures.

Measures (identical code for real and phantom scans, from whole-vertebra
level masks, since the real labels are whole vertebrae):
- vertebral body: the anterior 38 % of each vertebra mask along the AP axis;
  trabecular = body eroded by 3 mm; cortical = the outer 1.5 mm of the body;
- disc: a 10 mm wide, 2 mm thick disc halfway between two body centroids;
- muscle: HU -29..150 in a paraspinal box behind the vertebrae; fat: HU -190..-30 in the body;
- noise: SD of the residual after a 3x3x3 local mean, inside eroded paraspinal muscle;
- body dimensions (width, depth, height in mm) per level from the body part;
- lower ribs: the height of the lowest rib 55-85 mm beside the spine, behind the L1 body's centre,
  as a fraction of the way from the T12 body's centre (0) to L1's (1), each side.
Writes training/results/realism_report.md, .json, realism_figure.png and realism_ribs.png.

Run: python training/studies/realism_report.py   (needs scipy and matplotlib)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from OsteoScreenLib import registry  # noqa: E402
from OsteoScreenLib.ct_io import read_volume  # noqa: E402
from OsteoScreenLib.phantom import generate_case, render_case, sample_parameters  # noqa: E402
from OsteoScreenLib.volume import Volume  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
if not REAL.exists():
    REAL = Path("/work/shared/data/real")
RESULTS = ROOT / "training" / "results"
TS_TO_VERSE = {33: 18, 32: 19, 31: 20, 30: 21}  # TotalSegmentator v2 total -> VerSe ids
PCT = (5, 25, 50, 75, 95)
FINDINGS = """\
- Soft tissue matches well: fat (median about -95 to -100 HU in phantoms, -79 to -95 in real) and
  paraspinal muscle (38-43 vs 26-47 HU) fall in the same ranges; muscle noise spans the real range
  (phantoms 15-39 HU, real 17-48 HU), but the real spine crops are noisier than most phantoms.
- Trabecular bone: phantom medians follow the sampled BMD (the classes are balanced, so many are
  osteopenic/osteoporotic and darker than the two real spines, medians 110-117 HU); the real VerSe
  body is far more heterogeneous (p5-p95 -158..430 HU) than the phantom texture (about -20..170).
- Cortical shell: phantom p75-p95 (about 450-800 HU) are close to VerSe (513-902) but the phantom
  shell is a continuous, even white frame; real cortex is thinner and patchier, endplates less bright.
- Discs: the disc probe also catches endplate bone and fat in thick or tilted phantom slices, so the
  phantom disc rows scatter (medians 33-198 HU) around the real 24-102; treat this row as rough.
- Body size: estimated from the anterior part of the level masks with identical code, phantom widths
  (34-46 mm) and heights are in the real range; depths read 2-8 mm less than the true phantom values
  because the posterior-element mask is long, the same bias the real masks have.
- Look: organs are smooth ellipsoids without texture, enhancement patterns or partial-volume detail;
  bowel is a set of blobs; lungs hold a sparse vessel tree; laminae and spinous processes are
  rounded capsules; there are no scapulae, clavicles, sternum, iliac wings or arms-down arms.
  The real TotalSegmentator slab is 3 mm and blurrier than any phantom slice shown.
- The TPTBox crop (PIR) is shown as stored, so its panel is not a true axial slice.
- Lower ribs (generator 1.1.0): on the real abdominal CT the 12th rib runs down from T12 and lies
  beside L1's centre 75-85 mm from the spine; the 1.0.0 phantoms' lowest ribs ran level at T12
  height, so models trained on them could take any rib beside a vertebra for that vertebra's own.
  Generator 1.1.0 bends the lowest ribs down (slopes fitted to this one real case, varied per
  subject) and draws the lowest two pairs thinner and fainter, the last one shorter; the heights
  above now fall in the real case's range. One real case is a thin basis: the slope varies widely
  between people.
"""


def real_cases():
    out = []
    for name, remap in (("totalsegmentator-example", TS_TO_VERSE), ("verse012", None), ("tptbox-l2-l4", None)):
        ct = read_volume(REAL / name / "ct.nii.gz")
        lab = read_volume(REAL / name / "labels.nii.gz")
        levels = lab.array.astype(np.int16)
        if remap:
            new = np.zeros_like(levels)
            for a, b in remap.items():
                new[levels == a] = b
            levels = new
        out.append((name, ct, levels))
    return out


def world_coords(vol, idx):
    kji = np.asarray(idx, float)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (vol.ijk_to_ras @ ijk1.T).T[:, :3]


def body_part(vol, mask):
    """Anterior 38 % of a whole-vertebra mask (RAS y is anterior)."""
    idx = np.argwhere(mask)
    xyz = world_coords(vol, idx)
    y = xyz[:, 1]
    cut = y.max() - 0.38 * (y.max() - y.min())
    keep = idx[y >= cut]
    body = np.zeros_like(mask)
    body[tuple(keep.T)] = True
    return body, xyz[y >= cut]


def erode_mm(mask, spacing_kji, mm):
    it = [max(1, int(round(mm / s))) for s in spacing_kji]
    st = np.zeros((2 * it[0] + 1, 2 * it[1] + 1, 2 * it[2] + 1), bool)
    kk, jj, ii = np.ogrid[-it[0]:it[0] + 1, -it[1]:it[1] + 1, -it[2]:it[2] + 1]
    st[(kk / it[0]) ** 2 + (jj / it[1]) ** 2 + (ii / it[2]) ** 2 <= 1.0] = True
    return ndimage.binary_erosion(mask, st)


def crop_to_spine(ct, levels, margin_mm=70.0):
    """Crop CT and levels to the vertebrae plus a margin (keeps measuring fast on 512x512 grids)."""
    from OsteoScreenLib.volume import Volume

    idx = np.argwhere(levels > 0)
    sp = ct.spacing_mm[::-1]
    lo = np.maximum(idx.min(0) - (margin_mm / sp).astype(int), 0)
    hi = np.minimum(idx.max(0) + (margin_mm / sp).astype(int) + 1, levels.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    m = ct.ijk_to_ras.copy()
    m[:3, 3] = m[:3, :3] @ lo[::-1].astype(float) + m[:3, 3]
    return Volume(np.ascontiguousarray(ct.array[sl]), m), levels[sl]


def measure(name, ct, levels) -> dict:
    ct, levels = crop_to_spine(ct, levels)
    a = ct.array.astype(np.float32)
    sp = ct.spacing_mm[::-1]  # k, j, i
    res = {"name": name, "spacing_ijk_mm": [round(float(s), 3) for s in ct.spacing_mm], "levels": {}}
    trab, cort, disc_vals = [], [], []
    centroids = {}
    all_vert = levels > 0
    for lid in sorted(int(v) for v in np.unique(levels) if v):
        mask = levels == lid
        if mask.sum() < 50:
            continue
        body, xyz = body_part(ct, mask)
        core = erode_mm(body, sp, 3.0)
        shell = body & ~erode_mm(body, sp, 1.5)
        lo, hi = np.percentile(xyz, 2, axis=0), np.percentile(xyz, 98, axis=0)
        # height along the body axis is the extent along z (axial scans) of the body part
        dims = hi - lo
        lname = registry.VERSE_LEVEL_NAMES.get(lid, str(lid))
        res["levels"][lname] = {"width_mm": round(float(dims[0]), 1), "depth_mm": round(float(dims[1]), 1),
                                "height_mm": round(float(dims[2]), 1),
                                "trabecular_hu_median": round(float(np.median(a[core])), 1) if core.any() else None}
        if core.any():
            trab.append(a[core])
        cort.append(a[shell])
        centroids[lid] = xyz.mean(0)
    ids = sorted(centroids)
    inv = np.linalg.inv(ct.ijk_to_ras)
    for u, l in zip(ids[:-1], ids[1:]):
        if l != u + 1:
            continue
        c = 0.5 * (centroids[u] + centroids[l])
        axis = centroids[u] - centroids[l]
        axis /= np.linalg.norm(axis)
        # sample a thin disc of points around c
        pts = []
        for r in np.linspace(0, 5, 6):
            for t in np.linspace(0, 2 * np.pi, 16, endpoint=False):
                e1 = np.cross(axis, [1.0, 0, 0])
                e1 /= np.linalg.norm(e1)
                e2 = np.cross(axis, e1)
                for h in (-0.7, 0.0, 0.7):
                    pts.append(c + r * (np.cos(t) * e1 + np.sin(t) * e2) + h * axis)
        ijk = (inv @ np.c_[np.array(pts), np.ones(len(pts))].T)[:3].T
        kji = np.round(ijk[:, ::-1]).astype(int)
        ok = np.all((kji >= 0) & (kji < np.array(a.shape)), axis=1)
        kji = kji[ok]
        vals = a[tuple(kji.T)]
        vals = vals[~all_vert[tuple(kji.T)]]
        if len(vals):
            disc_vals.append(vals)
    # muscle: box behind the vertebrae, 15-45 mm lateral of the midline, 10-60 mm posterior of the masks
    idx = np.argwhere(all_vert)
    xyz = world_coords(ct, idx)
    x_mid = np.median(xyz[:, 0])
    y_back = np.percentile(xyz[:, 1], 1)
    z_lo, z_hi = np.percentile(xyz[:, 2], [5, 95])
    grid = np.argwhere(np.ones(a.shape, bool))
    wxyz = world_coords(ct, grid)
    box = ((np.abs(wxyz[:, 0] - x_mid) > 12) & (np.abs(wxyz[:, 0] - x_mid) < 45)
           & (wxyz[:, 1] < y_back + 35) & (wxyz[:, 1] > y_back - 25) & (wxyz[:, 2] > z_lo) & (wxyz[:, 2] < z_hi))
    box_mask = np.zeros(a.shape, bool)
    box_mask[tuple(grid[box].T)] = True
    muscle = box_mask & (a > -29) & (a < 150) & ~all_vert
    muscle = ndimage.binary_opening(muscle, iterations=1)
    muscle_core = ndimage.binary_erosion(muscle, iterations=1)
    local_mean = ndimage.uniform_filter(a, size=3)
    resid = (a - local_mean) * np.sqrt(27.0 / 26.0)
    body_region = a > -400
    fat = body_region & (a > -190) & (a < -30)
    res["hu"] = {
        "trabecular": np.percentile(np.concatenate(trab), PCT).round(1).tolist() if trab else None,
        "cortical": np.percentile(np.concatenate(cort), PCT).round(1).tolist() if cort else None,
        "disc": np.percentile(np.concatenate(disc_vals), PCT).round(1).tolist() if disc_vals else None,
        "muscle": np.percentile(a[muscle], PCT).round(1).tolist() if muscle.any() else None,
        "fat": np.percentile(a[fat], PCT).round(1).tolist() if fat.any() else None,
    }
    res["muscle_noise_sd_hu"] = round(float(np.std(resid[muscle_core])), 1) if muscle_core.sum() > 50 else None
    return res


RIB_BINS_MM = (55, 65, 75, 85)


def voxel_ras(vol) -> np.ndarray:
    """RAS mm of every voxel centre, shape (k, j, i, 3)."""
    return vol.voxel_centers_ras(np.indices(vol.array.shape).reshape(3, -1).T).reshape(*vol.array.shape, 3)


def lowest_rib_profile(ct, levels, hu=200.0) -> dict:
    """Per lateral distance (RIB_BINS_MM, +-5 mm) and side (R, L): the median height of the lowest
    cluster of bone (> hu, outside the dilated vertebra masks, behind L1's centre), as a fraction from
    T12's body centre (0) to L1's (1); None where no rib shows."""
    a, lv = ct.array, levels.array
    xyz = voxel_ras(ct)
    t12 = xyz[lv == registry.VERSE_LEVEL_IDS["T12"]].mean(0)
    l1 = xyz[lv == registry.VERSE_LEVEL_IDS["L1"]].mean(0)
    bone = (a > hu) & ~ndimage.binary_dilation(lv > 0, iterations=2) & (xyz[..., 1] < l1[1] + 5.0)
    out = {}
    for b in RIB_BINS_MM:
        row = {}
        for side, sign in (("R", 1.0), ("L", -1.0)):
            beside = sign * (xyz[..., 0] - l1[0])
            f = (t12[2] - xyz[..., 2][bone & (beside >= b - 5) & (beside < b + 5)]) / (t12[2] - l1[2])
            f = np.sort(f[(f > -0.3) & (f < 1.8)])[::-1]
            if f.size < 3:
                row[side] = None
                continue
            gaps = np.nonzero(-np.diff(f) > 0.25)[0]  # clusters of heights: one per rib
            row[side] = round(float(np.median(f[:gaps[0] + 1] if len(gaps) else f)), 2)
        out[b] = row
    return out


def rib_cases(n=3):
    """Chest phantoms 0..n-1 with their generator's lower ribs, and with the level ribs of 1.0.0."""
    out = []
    for seed in range(n):
        params = sample_parameters(seed, "chest")
        out.append((f"phantom-chest-{seed}", render_case(params)))
        del params["lower_ribs"]
        out.append((f"phantom-chest-{seed} (1.0.0 ribs)", render_case(params)))
    return out


def rib_figure(cases, path):
    """Coronal maximum-intensity views of the back half, L1 centred: the course of the lower ribs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, ct, lv) in zip(axs, cases):
        xyz = voxel_ras(ct)
        l1 = xyz[lv.array == registry.VERSE_LEVEL_IDS["L1"]].mean(0)
        rel = xyz - l1
        keep = (np.abs(rel[..., 0]) < 130) & (rel[..., 2] > -60) & (rel[..., 2] < 90) & (rel[..., 1] < 5)
        x = np.round(rel[..., 0][keep] / 3).astype(int) + 44
        z = np.round(rel[..., 2][keep] / 3).astype(int) + 20
        img = np.full((51, 89), -1000.0)
        np.maximum.at(img, (z, x), ct.array[keep].astype(float))
        ax.imshow(img, cmap="gray", vmin=-100, vmax=700, origin="lower", extent=(-133.5, 133.5, -61.5, 91.5))
        ax.axhline(0, color="y", lw=0.5)
        ax.set_title(title + " (line: L1 centre; mm)", fontsize=8)
    plt.tight_layout()
    fig.savefig(path, dpi=80)


def phantom_cases(n=3):
    out = []
    for seed in range(n):
        for preset in ("chest", "spine"):
            c = generate_case(seed, preset)
            out.append((f"phantom-{preset}-{seed}", c.ct, c.levels.array.astype(np.int16), c))
    return out


def figure(real, phantoms, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def axial(ax, vol, levels, lid, title):
        k = int(np.argwhere(levels == lid)[:, 0].mean())
        sp = vol.spacing_mm
        img = vol.array[k]
        ax.imshow(img, cmap="gray", vmin=-250, vmax=450,
                  extent=(0, img.shape[1] * sp[0], img.shape[0] * sp[1], 0))
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    def sagittal(ax, vol, levels, lid, title):
        idx = np.argwhere(levels == lid)
        codes = vol.axis_codes()
        lr_axis = 2 - next(i for i, c in enumerate(codes) if c in "LR")  # array axis of left-right
        pos = int(np.median(idx[:, lr_axis]))
        img = np.take(vol.array, pos, axis=lr_axis)
        # orient: superior up, anterior left
        rest = [ax_ for ax_ in range(3) if ax_ != lr_axis]
        names = [codes[2 - r] for r in rest]
        if names[0] not in "SI":
            img, names = img.T, names[::-1]
        if names[0] == "S":
            img = img[::-1]
        if names[1] == "P":
            pass
        else:
            img = img[:, ::-1]
        sp = vol.spacing_mm
        sizes = {codes[i]: sp[i] for i in range(3)}
        hs = next(v for k_, v in sizes.items() if k_ in "SI")
        ws = next(v for k_, v in sizes.items() if k_ in "AP")
        ax.imshow(img, cmap="gray", vmin=-250, vmax=700, extent=(0, img.shape[1] * ws, 0, img.shape[0] * hs))
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    fig, axs = plt.subplots(2, 4, figsize=(16, 8.5))
    r = {n: (ct, lv) for n, ct, lv in real}
    ph = {n: (ct, lv) for n, ct, lv, _ in phantoms}
    axial(axs[0, 0], *r["totalsegmentator-example"], 20, "real: TotalSegmentator example, L1 (3 mm)")
    axial(axs[0, 1], *ph["phantom-chest-0"], 20, "phantom chest 0, L1")
    axial(axs[0, 2], *r["tptbox-l2-l4"], 22, "real: TPTBox crop, L3 (1.5 mm)")
    axial(axs[0, 3], *ph["phantom-spine-1"], 22, "phantom spine 1, L3")
    sagittal(axs[1, 0], *r["verse012"], 20, "real: VerSe 012, sagittal through L1")
    sagittal(axs[1, 1], *ph["phantom-spine-0"], 20, "phantom spine 0, sagittal through L1")
    sagittal(axs[1, 2], *r["totalsegmentator-example"], 20, "real: TotalSegmentator example, sagittal")
    sagittal(axs[1, 3], *ph["phantom-chest-1"], 20, "phantom chest 1, sagittal through L1")
    plt.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    real = real_cases()
    phantoms = phantom_cases()
    rows = [measure(n, ct, lv) for n, ct, lv in real] + [measure(n, ct, lv) for n, ct, lv, _ in phantoms]
    truth = {n: {v["name"]: [v["body_width_mm"], v["body_depth_mm"], v["body_height_mm"]] for v in c.meta["vertebrae"]
                 if v["name"] in ("T11", "T12", "L1", "L2", "L3", "L4")} for n, _, _, c in phantoms}
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure(real, phantoms, RESULTS / "realism_figure.png")
    ts_ct, ts_lv = next((ct, Volume(lv, ct.ijk_to_ras.copy())) for n, ct, lv in real if n == "totalsegmentator-example")
    ribs = {"totalsegmentator-example": lowest_rib_profile(ts_ct, ts_lv)}
    cases = [(name, c.ct, c.levels) for name, c in rib_cases()]
    ribs.update({name: lowest_rib_profile(ct, lv) for name, ct, lv in cases})
    rib_figure([("real: TotalSegmentator example", ts_ct, ts_lv)] + cases[:2], RESULTS / "realism_ribs.png")
    (RESULTS / "realism_report.json").write_text(json.dumps({"cases": rows, "phantom_true_body_dims_mm": truth,
                                                             "lowest_rib_t12_to_l1": ribs}, indent=2) + "\n")
    lines = ["# Realism report: phantoms beside real CT", "",
             "Generated by `training/studies/realism_report.py`. Real cases: the three labelled cases of "
             "`shared/data/real` (whole-vertebra masks). Phantoms: seeds 0-2 of the `chest` and `spine` presets. "
             "The same code measures both (see the script docstring). HU as percentiles 5/25/50/75/95.", ""]
    for tissue in ("trabecular", "cortical", "disc", "muscle", "fat"):
        lines += [f"## {tissue}", "", "| case | spacing mm | p5 | p25 | p50 | p75 | p95 |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            v = r["hu"][tissue]
            cells = " | ".join(f"{x:.0f}" for x in v) if v else "- | - | - | - | -"
            lines.append(f"| {r['name']} | {'x'.join(f'{s:g}' for s in r['spacing_ijk_mm'])} | {cells} |")
        lines.append("")
    lines += ["## Noise in muscle (SD of the residual after a 3x3x3 mean, HU)", "", "| case | SD |", "| --- | --- |"]
    lines += [f"| {r['name']} | {r['muscle_noise_sd_hu']} |" for r in rows]
    lines += ["", "## Vertebral body dimensions (width x depth x height, mm; anterior part of the level mask)", "",
              "| case | " + " | ".join(["T11", "T12", "L1", "L2", "L3", "L4"]) + " |", "| --- " * 7 + "|"]
    for r in rows:
        cells = []
        for lv in ("T11", "T12", "L1", "L2", "L3", "L4"):
            d = r["levels"].get(lv)
            cells.append(f"{d['width_mm']:.0f}x{d['depth_mm']:.0f}x{d['height_mm']:.0f}" if d else "-")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", "True phantom body sizes (width x depth x height) from meta.json:", ""]
    for n, d in truth.items():
        lines.append(f"- {n}: " + ", ".join(f"{k} {v[0]:.0f}x{v[1]:.0f}x{v[2]:.0f}" for k, v in d.items()))
    lines += ["", "![phantom beside real](realism_figure.png)", "",
              "## Lower ribs beside the spine", "",
              "Height of the lowest rib behind the L1 body's centre, 55-85 mm beside the spine: 0 = the T12 body's "
              "centre, 1 = L1's (right / left). Generator 1.1.0 gave the lowest ribs this downward course; "
              "the same phantoms with the level ribs of 1.0.0 beside them.", "",
              "| case | " + " | ".join(f"{b} mm" for b in RIB_BINS_MM) + " |", "| --- " * (len(RIB_BINS_MM) + 1) + "|"]
    for name, prof in ribs.items():
        cells = [" / ".join("-" if prof[b][s_] is None else f"{prof[b][s_]:.2f}" for s_ in "RL") for b in RIB_BINS_MM]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "![lower ribs](realism_ribs.png)", "", "## Where phantoms still differ", "", FINDINGS]
    (RESULTS / "realism_report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
