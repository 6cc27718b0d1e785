"""The vertebra counter's readings: L1 counted from T1 and read below the last rib pair, and what the
segmenter does when they agree with, contradict or replace the level finder's levels."""

import numpy as np
import pytest

from OsteoScreenLib.postprocess import components
from OsteoScreenLib.registry import COUNT_CLASSES, THORACIC_COUNT
from OsteoScreenLib.segmenter import find_levels, reconcile_count
from OsteoScreenLib.vertebra_count import count, count_vertebrae, find_bodies
from OsteoScreenLib.volume import Volume

MM = 5.0
RIB, NO_RIB = COUNT_CLASSES["rib-bearing body"], COUNT_CLASSES["body without ribs"]
USUAL = ["C6", "C7"] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 4)]


def step_mm(name: str) -> float:
    """Body centre to the next one: 18 mm at the cervicothoracic junction, 34 mm at the lumbar spine."""
    if name.startswith("L"):
        return 34.0
    if name.startswith("T") and int(name[1:]) >= 9:
        return 28.0
    return 19.0


def spine(names, ribs: set[str] | None = None, skip=(), specks=(), shape=(110, 16, 16)) -> tuple[Volume, dict]:
    """Counter probabilities on a 5 mm RAS grid: a 3x3x1 core per body, top of the volume first;
    ``ribs``: the names that bear ribs (default T1-T12); ``skip``: bodies the counter misses;
    ``specks``: (k, j, i) voxels marked rib-bearing off the spine. Returns the volume and each
    body's centre (RAS mm)."""
    ribs = {n for n in names if n.startswith("T")} if ribs is None else ribs
    p = np.zeros((*shape, 3), np.float32)
    s = (shape[0] - 3) * MM
    centres = {}
    for name in names:
        k = int(round(s / MM))
        centres[name] = np.array([7 * MM, 7 * MM, k * MM])
        if name not in skip:
            p[k, 6:9, 6:9, RIB if name in ribs else NO_RIB] = 0.9
        s -= step_mm(name)
    for k, j, i in specks:
        p[k, j, i, RIB] = 0.9
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return Volume.from_geometry(p, (MM,) * 3, (0.0, 0.0, 0.0)), centres


def test_usual_spine_both_readings_find_l1():
    probs, centres = spine(USUAL)
    c = count_vertebrae(probs)
    assert len(c.bodies) == len(USUAL)
    assert c.first_rib == USUAL.index("T1") and c.last_rib == USUAL.index("T12")
    assert c.l1_from_top == c.l1_from_ribs == USUAL.index("L1")
    assert c.rib_pairs == THORACIC_COUNT
    assert np.allclose(c.bodies[c.l1_from_top].centroid_ras, centres["L1"])


def test_eleven_rib_pairs_readings_disagree():
    names = ["C6", "C7"] + [f"T{i}" for i in range(1, 12)] + [f"L{i}" for i in range(1, 5)]
    c = count_vertebrae(spine(names)[0])
    assert c.rib_pairs == 11
    assert c.l1_from_ribs == names.index("L1")
    assert c.l1_from_top == names.index("L1") + 1  # counting 12 thoracic vertebrae lands on L2


def test_scan_starting_below_t1_reads_the_ribs_only():
    names = USUAL[USUAL.index("T5"):]
    c = count_vertebrae(spine(names)[0])
    assert c.first_rib is None and c.l1_from_top is None
    assert c.l1_from_ribs == names.index("L1")


def test_scan_ending_at_the_last_rib_pair_reads_from_the_top_only():
    names = USUAL[: USUAL.index("T12") + 1]
    c = count_vertebrae(spine(names)[0])
    assert c.l1_from_ribs is None
    assert c.l1_from_top is None  # L1 (T1 + 12) is beyond the scan


def test_a_missed_body_stops_the_count_across_it():
    c = count_vertebrae(spine(USUAL, skip={"T6"})[0])
    assert len(c.bodies) == len(USUAL) - 1
    assert c.missed_after and c.l1_from_top is None
    assert c.l1_from_ribs is not None  # below the gap the last rib pair still reads


def test_speck_off_the_spine_is_not_a_body():
    probs, _ = spine(USUAL, specks=[(60, 1, 15)])
    assert len(find_bodies(probs)) == len(USUAL)


def unclear(probs: Volume, rank: int) -> Volume:
    """The ``rank``-th rib-bearing body from the bottom made unclear (half rib-bearing)."""
    ks = np.unique(np.argwhere(probs.array[..., RIB] > 0.5)[:, 0])
    probs.array[ks[rank], 6:9, 6:9, RIB] = probs.array[ks[rank], 6:9, 6:9, NO_RIB] = 0.45
    return probs


def test_unclear_last_rib_pair_leaves_the_count_from_the_top():
    c = count_vertebrae(unclear(spine(USUAL)[0], 0))  # T12
    assert c.l1_from_ribs is None
    assert c.l1_from_top == USUAL.index("L1")


def test_ribs_interrupted_give_no_reading():
    c = count_vertebrae(unclear(spine(USUAL)[0], 6))  # T6
    assert c.l1_from_top is None and c.l1_from_ribs is None and c.problems


def test_fewer_than_two_bodies():
    c = count([])
    assert c.l1_from_top is None and c.l1_from_ribs is None and c.problems


# --- reconciling the counter with the level finder


def level_maps(probs: Volume, centres: dict, l1: str, l2: str | None) -> Volume:
    """Coarse probabilities with L1 and L2 as 5x5x3 blocks at the given bodies."""
    p = np.zeros((*probs.array.shape[:3], 3), np.float32)
    for label, name in ((1, l1), (2, l2)):
        if name is None:
            continue
        k, j, i = np.round(centres[name][::-1] / MM).astype(int)
        p[k - 1 : k + 2, j - 2 : j + 3, i - 2 : i + 3, label] = 0.95
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return Volume(p, probs.ijk_to_ras.copy())


def near(levels, name, centres, body) -> bool:
    return float(np.linalg.norm(levels[name]["centroid_ras"] - centres[body])) < 6.0


def test_levels_confirmed_by_both_readings_stay_without_warning():
    probs, centres = spine(USUAL)
    coarse = level_maps(probs, centres, "L1", "L2")
    _, levels, report, warnings = reconcile_count(coarse, find_levels(coarse), count_vertebrae(probs))
    assert report["confirmed"] and not warnings
    assert near(levels, "L1", centres, "L1")


@pytest.mark.parametrize("l1, l2", [("L2", "L3"), ("T12", "L1")])
def test_levels_off_by_one_move_to_the_counted_ones_with_a_warning(l1, l2):
    probs, centres = spine(USUAL)
    coarse = level_maps(probs, centres, l1, l2)
    _, levels, report, warnings = reconcile_count(coarse, find_levels(coarse), count_vertebrae(probs))
    assert report["moved"] and len(warnings) == 1 and "placed by counting" in warnings[0]
    assert ("higher" in warnings[0]) == (l1 == "T12")
    assert near(levels, "L1", centres, "L1") and near(levels, "L2", centres, "L2")


def test_disagreeing_readings_leave_the_levels_and_warn():
    names = ["C6", "C7"] + [f"T{i}" for i in range(1, 12)] + [f"L{i}" for i in range(1, 5)]
    probs, centres = spine(names)
    coarse = level_maps(probs, centres, "L1", "L2")
    _, levels, report, warnings = reconcile_count(coarse, find_levels(coarse), count_vertebrae(probs))
    assert "moved" not in report and len(warnings) == 1 and "disagree" in warnings[0]
    assert near(levels, "L1", centres, "L1")


def test_one_reading_alone_warns_but_moves_nothing():
    names = USUAL[USUAL.index("T5"):]
    probs, centres = spine(names)
    coarse = level_maps(probs, centres, "L2", "L3")
    _, levels, report, warnings = reconcile_count(coarse, find_levels(coarse), count_vertebrae(probs))
    assert "moved" not in report and len(warnings) == 1 and "one vertebra higher" in warnings[0]
    assert near(levels, "L1", centres, "L2")


def test_l2_missing_from_the_levels_is_taken_one_counted_body_below():
    probs, centres = spine(USUAL)
    coarse = level_maps(probs, centres, "L2", None)
    _, levels, report, _ = reconcile_count(coarse, find_levels(coarse), count_vertebrae(probs))
    assert report["moved"] and near(levels, "L1", centres, "L1") and near(levels, "L2", centres, "L2")


def test_touching_cores_are_split_at_the_disc():
    """An early or blurred counter marks the column as one region: its mass per slice still peaks at
    each body and dips at each disc, and the bodies are counted from the peaks."""
    probs, _ = spine(USUAL)
    p = probs.array
    column = p[..., 1:].sum(-1) > 0
    ks = np.nonzero(column.any(axis=(1, 2)))[0]
    fill = np.zeros(p.shape[:3], bool)
    fill[ks.min():ks.max() + 1, 7, 7] = True  # a thin bridge through every disc
    bridge = fill & ~column
    p[bridge, 1] = p[bridge, 2] = 0.3  # no opinion on ribs
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    assert len(components(p[..., 0] < 0.5, 2)) == 1
    c = count_vertebrae(probs)
    assert len(c.bodies) == len(USUAL)
    assert c.l1_from_top == c.l1_from_ribs == USUAL.index("L1")


def test_the_disc_class_separates_bodies_the_body_classes_would_join():
    """Where the counter is more sure of a disc than of a body, the bodies on either side are two,
    even if the body classes together outweigh the background there."""
    probs, _ = spine(USUAL)
    p3 = probs.array
    p = np.zeros((*p3.shape[:3], 4), np.float32)
    p[..., :3] = p3
    column = p3[..., 1:].sum(-1) > 0
    ks = np.nonzero(column.any(axis=(1, 2)))[0]
    gap = np.zeros(p.shape[:3], bool)
    gap[ks.min():ks.max() + 1, 6:9, 6:9] = True
    gap &= ~column
    p[gap] = [0.1, 0.2, 0.2, 0.5]  # body 0.4 > background 0.1, but the disc is surer
    p[~gap & ~column] = [1.0, 0.0, 0.0, 0.0]
    c = count_vertebrae(Volume(p, probs.ijk_to_ras.copy()))
    assert len(c.bodies) == len(USUAL)
    assert c.l1_from_top == c.l1_from_ribs == USUAL.index("L1")


# --- the chain along a real spine's course


def tilted_spine(forward_mm_per_step: float, shape=(110, 40, 16)) -> tuple[Volume, dict]:
    """``USUAL`` with the spine from T12 up to T9 running forwards as it rises (steps of 28 mm; a
    kyphotic patient lying supine): each of those three steps moves the body above
    ``forward_mm_per_step`` towards anterior, and the spine above T9 with it."""
    base, centres = spine(USUAL, shape=shape)
    p = np.zeros_like(base.array)
    p[..., 0] = 1.0
    moved = {}
    tilted = {"T11": 1, "T10": 2, "T9": 3}
    for name, centre in centres.items():
        above_t9 = USUAL.index(name) < USUAL.index("T9")
        c = centre + [0.0, forward_mm_per_step * (3 if above_t9 else tilted.get(name, 0)), 0.0]
        k, j, i = np.round(c[::-1] / MM).astype(int)
        cls = RIB if name.startswith("T") else NO_RIB
        p[k, j - 1:j + 2, i - 1:i + 2] = 0.0
        p[k, j - 1:j + 2, i - 1:i + 2, cls] = 0.9
        p[k, j - 1:j + 2, i - 1:i + 2, 0] = 0.1
        moved[name] = c
    return Volume(p, base.ijk_to_ras.copy()), moved


def test_a_spine_running_forwards_stays_one_chain():
    """A spine running obliquely to the scanner's axis moves forwards by up to as much as it rises
    (45 degrees): the chain follows it, so the count from T1 reads."""
    probs, centres = tilted_spine(forward_mm_per_step=25.0)  # 25 mm forwards per 28 mm step
    c = count_vertebrae(probs)
    assert len(c.bodies) == len(USUAL)
    assert c.l1_from_top == c.l1_from_ribs == USUAL.index("L1")


def test_a_jump_sideways_steeper_than_45_degrees_ends_the_chain():
    probs, _ = tilted_spine(forward_mm_per_step=32.0)  # 32 mm forwards per 28 mm step: not a spine
    c = count_vertebrae(probs)
    assert len(c.bodies) < len(USUAL)
    assert c.l1_from_top is None


def test_the_longest_chain_wins_over_a_stronger_blob_off_the_spine():
    """A big bright region beside the neck (a shoulder, a clavicle) outweighs every body but is not
    the spine: the spine is the longest chain, wherever its strongest body is."""
    probs, _ = spine(USUAL, shape=(110, 16, 30))
    p = probs.array
    p[100:106, 2:12, 22:29, :] = [0.02, 0.0, 0.98]  # 420 voxels at the top, 75 mm to the side
    c = count_vertebrae(probs)
    assert len(c.bodies) == len(USUAL)
    assert c.l1_from_top == USUAL.index("L1")


def test_two_bodies_run_into_one_stop_the_count_across_them():
    """Where the counter misses a disc, two bodies come out as one twice as tall: counting from T1
    across it would land one body off, so the count stops there; the last rib pair still reads."""
    probs, centres = spine(USUAL)
    p = probs.array
    k4, k5 = (int(round(centres[n][2] / MM)) for n in ("T4", "T5"))
    for k in (k4, k5):
        p[k, 6:9, 6:9] = [0.0, 0.0, 0.0]
    p[k5:k4 + 1, 6:9, 6:9, RIB] = 0.9  # one tall body from T5 up to T4
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    c = count_vertebrae(probs)
    assert len(c.bodies) == len(USUAL) - 1
    assert c.missed_after and c.l1_from_top is None
    assert c.l1_from_ribs == USUAL.index("L1") - 1


def test_outline_offset_from_the_counted_bodies():
    from OsteoScreenLib.segmenter import outline_offsets

    # 1 mm grid, S up along k; bodies counted at S = 20 and S = 54 (34 mm apart)
    labels = Volume(np.zeros((80, 20, 20), np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]))
    labels.array[46:63, 5:15, 5:15] = 1  # L1 on the upper body: centroid S = 54
    labels.array[20:38, 5:15, 5:15] = 2  # L2 slid up across the disc: centroid S = 28.5
    centres = [[9.5, 9.5, 54.0], [9.5, 9.5, 20.0]]
    assert outline_offsets(labels, centres) == {"L1": 0.0, "L2": 8.5}
    labels.array[labels.array == 2] = 0  # a level not outlined has no offset
    assert outline_offsets(labels, centres) == {"L1": 0.0}
    assert outline_offsets(labels, []) == {}



def test_an_outline_across_a_disc_is_a_level_warning_one_on_its_body_is_not():
    from OsteoScreenLib.segmenter import outline_offset_warnings, outline_offsets

    labels = Volume(np.zeros((90, 20, 20), np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]))
    labels.array[46:63, 5:15, 5:15] = 1  # on the body counted at S = 54
    labels.array[29:46, 5:15, 5:15] = 2  # L2 slid 17 mm up from its body at S = 20, across the disc
    warnings = outline_offset_warnings(outline_offsets(labels, [[9.5, 9.5, 54.0], [9.5, 9.5, 20.0]]))
    assert len(warnings) == 1 and warnings[0].startswith("L2's outline lies 17 mm")
    labels.array[labels.array == 2] = 0
    labels.array[14:27, 5:15, 5:15] = 2  # on its body: 0 mm
    assert outline_offset_warnings(outline_offsets(labels, [[9.5, 9.5, 54.0], [9.5, 9.5, 20.0]])) == []
