"""What an analysis produces besides results.json: DICOM SEG, a TID 1500 SR and a PNG preview."""

from __future__ import annotations

import threading


def prepare_in_background() -> threading.Thread:
    """Import highdicom and load the standard's tables it reads on first use, in a thread, while
    the caller runs the model; ``join()`` it before building the outputs.

    highdicom's import costs 0.2-0.3 s and its IOD and module tables (JSON, parsed when the first
    SOP instance is built) 0.45 s more, here: a third of the SEG's time, paid once per process
    and, in an analysis task, once per scan. The model's inference releases the GIL, so in a
    thread most of it overlaps the phases' reading and segmentation instead of adding to them.

    The import itself is made here, in the caller's thread (two threads importing at once may
    meet in a circular import and see a module half made); the thread only parses the tables.
    A failure in the thread is left for the outputs to meet again, with their own error.
    """
    import highdicom  # noqa: F401 - see above
    from highdicom import _standard_utils as standard

    def load() -> None:
        try:
            standard.get_sop_class_iod_map()
            standard.get_iod_module_map()
            standard.get_module_attribute_map()
        except Exception:  # noqa: BLE001 - the SEG and SR load them again and fail on their own
            pass

    thread = threading.Thread(target=load, name="dicomflow-highdicom-tables", daemon=True)
    thread.start()
    return thread
