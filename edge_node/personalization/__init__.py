"""Personalization on the node, end to end (the paper's Sec. 3.3 plus the safety gate).

* :mod:`.params`: what one personalization is asked to do (:class:`AdaptParams`, built once);
* :mod:`.run`: selection (Eq. 1), fine-tune, guard and gate, the new head (in the child);
* :mod:`.heads`: the one function that writes a head version, personalized or central;
* :mod:`.protocol`: the child's typed, versioned report to its parent;
* :mod:`.child`: the child processes (TensorFlow never enters the capture process);
* :mod:`.results`: every report kept in the clip database;
* :mod:`.loop`: the node's thread: when to adapt, submit, install centrals;
* :mod:`.cli`: ``python -m edge_node adapt`` and ``model ...``.

Nothing is imported here, so the CLI does not pull in the loop (nor the loop the CLI).
"""
