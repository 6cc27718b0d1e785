"""Studies: analyses, evaluations and benchmarks beside the recipe that makes the bundled models.

Each runs as ``python -m training.studies.<name>`` and writes its outputs to ``training/results/``;
nothing here is needed to reproduce the models (``training/reproduce.sh`` runs some of them after
training, to write the committed results).
"""
