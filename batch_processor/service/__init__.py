"""Composition: building a run's parts from the settings, and the modes that drive them.

- :mod:`.runner`: ``run_job``, the store, the process services around the jobs;
- :mod:`.modes`: the three modes' loops (batch, continuous, scheduled);
- :mod:`.jobs`: one job from the settings (the pipeline, its retry policies, its summary);
- :mod:`.routing`: the one place that decides the route and composes the Batch API route;
- :mod:`.classifier_setup`: which classifier a run gets; :mod:`.preflight`: checks before the
  first claim; :mod:`.preview`: the dry run's counts and cost estimate.

The process runtime (signals, health, metrics, logs, the fleet) is :mod:`batch_processor.runtime`.
"""
