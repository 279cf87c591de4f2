"""The confidence cascade: the offline model first, the LLM where it is unsure, and learning.

:mod:`.calibration` makes the offline model's sureness a frequency; :mod:`.escalation` picks
the documents the LLM sees; :mod:`.classifier` is ``--classifier cascade``; :mod:`.learning`
trains new offline model versions on the LLM's answers, which :mod:`.versions` keeps.
"""
