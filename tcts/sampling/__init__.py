"""Masked sampling: the one loop (``loop``), the model step it shares with the selector trainer (``step``),
mask schedules (``schedules``), the rule contract and baseline rules (``rules``), FAS (``fas``) and the list
of every rule (``registry``). Import from the submodules; this package imports nothing itself, so any of
them can be imported without the others."""
