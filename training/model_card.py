"""Model-card helpers shared by the segmentation and classification recipes.

Both recipes write a model folder (``Resources/Models/<name>/``) with ``model_card.json`` and
``model_card.md``; the classifiers import these helpers from here, not from the segmentation
recipe. The definitions still live in ``training/segmentation/export.py`` and
``training/segmentation/evaluate.py`` (being edited elsewhere at the time of this split); they
move here in one step, with those two modules importing them back from this one.
"""

from training.segmentation.evaluate import update_card
from training.segmentation.export import UNRECORDED_GENERATOR_VERSION, card_markdown, save_state, source_commit

__all__ = ["UNRECORDED_GENERATOR_VERSION", "card_markdown", "save_state", "source_commit", "update_card"]
