"""What only training needs: clean data (dataset.py), camera simulation (unprocess.py), the training
loop (train.py) and the held-out judging protocol it validates with (evaluate.py). ``nnraw convert``
imports none of it."""
