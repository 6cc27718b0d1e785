"""Moved to :mod:`training.studies.rib_check_eval` (a study, not part of the recipe).

Kept only because ``training/segmentation/real_eval.py`` and ``training/realism_chest.py`` import
``REAL_DATA`` from here; once they import it from ``training.real_data`` (and
``training/reproduce.sh`` runs ``python -m training.studies.rib_check_eval``), delete this file.
"""

from training.real_data import REAL_DATA  # noqa: F401

if __name__ == "__main__":  # the old command line still runs the study
    from training.studies.rib_check_eval import main

    main()
