"""Hardware-in-the-loop: one set of acceptance checks against a bench (``hil/run``)."""
