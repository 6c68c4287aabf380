"""Tools built on the runtime: the demo, the simulator, publishing and the shares view.

Nothing in the runtime imports from here; the command line (:mod:`worker.cli`) does.
"""
