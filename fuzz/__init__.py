"""`make fuzz`: mutated DICOM files fed to the validator, the header reader and both de-identifier engines.

:mod:`fuzz.seeds` loads the files mutated (pydicom's test files and small phantoms),
:mod:`fuzz.mutators` makes input *i* of a campaign from ``(seed, i)`` alone (so any input can be
made again), :mod:`fuzz.targets` feeds one input to every engine and says what went wrong, and
:mod:`fuzz.run` runs a campaign in worker processes with a watchdog and a memory limit.
"""
