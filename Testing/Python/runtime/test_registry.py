import pytest

from OsteoScreenLib import registry


@pytest.mark.parametrize(
    "bmd, expected",
    [(150.0, "normal"), (120.01, "normal"), (120.0, "osteopenia"), (100.0, "osteopenia"),
     (80.0, "osteopenia"), (79.99, "osteoporosis"), (20.0, "osteoporosis")],
)
def test_qct_class_follows_the_thresholds_on_the_mean_bmd(bmd, expected):
    assert registry.qct_class(bmd) == expected


def test_vertebra_codes_are_the_snomed_codes_slicer_uses():
    assert registry.VERTEBRA_BY_NAME["L1"].sct_code == "66794005"
    assert registry.VERTEBRA_BY_NAME["L2"].sct_code == "14293000"
    entry = registry.terminology_entry("L2")
    assert "SCT^123037004^Anatomical Structure" in entry
    assert "SCT^14293000^L2 vertebra" in entry


def test_label_mappings_of_other_tools():
    assert registry.LABEL_MAPPINGS["verse"] == {"L1": 20, "L2": 21}
    assert registry.LABEL_MAPPINGS["totalsegmentator"] == {"L1": 31, "L2": 30}
    assert registry.VERSE_LEVEL_IDS["T12"] == 19 and registry.VERSE_LEVEL_IDS["L1"] == 20
    assert registry.VERSE_LEVEL_IDS["T1"] == 8 and registry.VERSE_LEVEL_IDS["L5"] == 24


def test_label_values_and_names_are_unique():
    assert len(set(registry.LABEL_OF.values())) == len(registry.VERTEBRAE)
    assert registry.CLASSES == ("normal", "osteopenia", "osteoporosis")
