"""The precision doctor: when an accuracy gate fails, where the error starts and the smallest fix that passes.

``python -m harness doctor MODEL RECIPE`` (or ``pytest --doctor``, for the cases of a run that failed):

* :mod:`~harness.doctor.tensors` matches the recipe's tensors with the FP32 model's and builds the models the
  doctor runs; :mod:`~harness.doctor.compare` compares them node by node in chunks (bounded memory): the error
  each node adds (run alone on FP32 inputs) and carries;
* :mod:`~harness.doctor.gate` evaluates a recipe variant's gate on the whole evaluation set (cached);
  :mod:`~harness.doctor.search` finds a small keep_fp32 list that passes (grow, narrow, prune, in a time budget);
* :mod:`~harness.doctor.prescription` writes it as a recipe (TOML) and prices it in serial throughput;
* :mod:`~harness.doctor.run` runs all of it for a case, :mod:`~harness.doctor.report` renders the rows.

It consumes recipes, the FP32 reference and the budgets and produces a recipe: it enters the data flow at one
place, a recipe's artifact, and leaves a :class:`~harness.rows.DoctorRow`.
"""
